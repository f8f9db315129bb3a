"""Fixtures for the attacks: the real Assistant on real LanceDB files with a tiny random Llama.

The engine is the project's own (core.llm.engine.Engine over the shared tiny random Llama). The
prompts it receives are recorded, and the privacy checks read those assembled prompts, so no
result depends on what a model happens to say.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.assistant import Assistant
from core.config import Settings
from core.llm.engine import Engine
from core.memory.store import Store, open_store
from tests.helpers import RecordingEngine


@pytest.fixture(scope="session")
def base_engine(tiny_model) -> Any:
    return Engine(tiny_model, Settings(max_new_tokens=6, temperature=0.0, _env_file=None))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", max_new_tokens=6, temperature=0.0, _env_file=None)


@pytest.fixture
def store(settings: Settings, embedder) -> Iterator[Store]:
    """The chat process's store (`open_store`): turns are journaled and written in the background."""
    store = open_store(settings, embedder=embedder, journal=True)
    yield store
    store.close()


@pytest.fixture
def engine(base_engine) -> RecordingEngine:
    return RecordingEngine(base_engine, continues=True)


@pytest.fixture
def assistant(settings: Settings, store: Store, engine: RecordingEngine) -> Assistant:
    return Assistant(settings, store, engine)
