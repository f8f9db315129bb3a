"""The settings of a process that runs channels: core's `Settings` plus one section per channel,
each owned by its channel's module. Core names no platform; reading them all still happens in
one place (core/config.py), which finds these sections and their environment names itself."""

from __future__ import annotations

from pydantic import Field

from bots.console_settings import ConsoleSettings
from bots.matrix_settings import MatrixSettings
from bots.slack_settings import SlackSettings
from bots.telegram_settings import TelegramSettings
from core.config import Settings, get_settings


class ChannelSettings(Settings):
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    matrix: MatrixSettings = Field(default_factory=MatrixSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)


def get_channel_settings() -> ChannelSettings:
    """The process's settings with every channel's section, read once."""
    return get_settings(ChannelSettings)
