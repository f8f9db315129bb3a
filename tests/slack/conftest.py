"""Fixtures for the Slack tests: the local Slack stand-in and engines on the tiny model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from tests.slack.fake_slack import FakeSlack
from tests.slack.slack_support import APP_TOKEN, BOT_USER, TEAM, TOKEN, CountingEngine


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    fake.add_team(TOKEN, TEAM, BOT_USER, "BBOT111")
    fake.app_tokens.add(APP_TOKEN)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def make_engine(tiny_model: Any, tmp_path: Path) -> Any:
    """Build CountingEngines on the tiny model; their generation threads stop after the test."""
    from core.llm.engine import Engine

    made: list[Any] = []

    def make(delay: float = 0.0, max_new_tokens: int = 8) -> CountingEngine:
        settings = Settings(data_dir=tmp_path / "engine", max_new_tokens=max_new_tokens, temperature=0.0)
        engine = Engine(tiny_model, settings)
        made.append(engine)
        return CountingEngine(engine, delay)

    yield make
    for engine in made:
        engine.close()
