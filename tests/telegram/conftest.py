"""Fixtures: a fake Bot API on 127.0.0.1 and the real PTB Application pointed at it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bots.settings import ChannelSettings
from bots.telegram import TelegramChannel
from tests.telegram.fake_bot_api import TOKEN, FakeBotAPI


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeBotAPI]:
    api = FakeBotAPI()
    await api.start()
    yield api
    await api.stop()


def telegram_settings(
    api: FakeBotAPI, data_dir: Path, *, telegram: dict[str, Any] | None = None, **overrides: Any
) -> ChannelSettings:
    """Settings for a channel on the fake Bot API; `telegram` changes fields of its section."""
    section: dict[str, Any] = {
        "bot_token": TOKEN,
        "api_url": api.base_url,
        "poll_timeout": 1,
        "edit_interval": 0.2,
        "typing_interval": 4.0,
        **(telegram or {}),
    }
    return ChannelSettings(data_dir=data_dir, telegram=section, **overrides)


@contextlib.asynccontextmanager
async def running(assistant: Any, settings: ChannelSettings) -> AsyncIterator[TelegramChannel]:
    channel = TelegramChannel(assistant, settings)
    await channel.start()
    try:
        yield channel
    finally:
        await channel.stop()
