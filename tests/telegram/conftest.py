"""Fixtures: a fake Bot API on 127.0.0.1 and the real PTB Application pointed at it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bots.telegram import TelegramChannel
from core.config import Settings
from tests.telegram.fake_bot_api import TOKEN, FakeBotAPI


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeBotAPI]:
    api = FakeBotAPI()
    await api.start()
    yield api
    await api.stop()


def telegram_settings(api: FakeBotAPI, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "telegram_bot_token": TOKEN,
        "telegram_api_url": api.base_url,
        "data_dir": data_dir,
        "telegram_poll_timeout": 1,
        "telegram_edit_interval": 0.2,
        "telegram_typing_interval": 4.0,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running(assistant: Any, settings: Settings) -> AsyncIterator[TelegramChannel]:
    channel = TelegramChannel(assistant, settings)
    await channel.start()
    try:
        yield channel
    finally:
        await channel.stop()
