"""Slack's own settings: a section of the process's settings (bots/settings.py), read with all
the others in core/config.py. Environment: Slack's usual `SLACK_BOT_TOKEN`, `SLACK_SIGNING_SECRET`,
`SLACK_APP_TOKEN`, `SLACK_CLIENT_ID`, `SLACK_CLIENT_SECRET`, and `CONFIDANTE_SLACK_<NAME>` or
`CONFIDANTE_SLACK__<NAME>`; confidante.toml: a `[slack]` table."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr


def _usual(name: str, env: str) -> AliasChoices:
    return AliasChoices(name, env)


class SlackSettings(BaseModel):
    # one workspace: the bot token (xoxb-…); many: client id and secret (OAuth installs)
    bot_token: SecretStr | None = Field(default=None, validation_alias=_usual("bot_token", "SLACK_BOT_TOKEN"))
    # HTTP mode: checks each request came from Slack (not needed with an app token)
    signing_secret: SecretStr | None = Field(
        default=None, validation_alias=_usual("signing_secret", "SLACK_SIGNING_SECRET")
    )
    # Socket Mode (xapp-…): no public URL needed
    app_token: SecretStr | None = Field(default=None, validation_alias=_usual("app_token", "SLACK_APP_TOKEN"))
    client_id: str | None = Field(default=None, validation_alias=_usual("client_id", "SLACK_CLIENT_ID"))
    client_secret: SecretStr | None = Field(
        default=None, validation_alias=_usual("client_secret", "SLACK_CLIENT_SECRET")
    )
    api_url: str | None = None  # another Web API base (a test's fake)
    http_host: str = "127.0.0.1"
    http_port: int = 3000
    # "auto": Slack's streaming API in threads, chat.update elsewhere; "update": always chat.update
    stream_mode: Literal["auto", "update"] = "auto"
    update_interval: float = 1.0
    # the public https URL Slack reaches this app at (HTTP mode / OAuth redirect), if any
    public_url: str | None = None
    reply_chars: int = 12_000  # the longest reply; Slack's streaming API takes 12k per append

    @property
    def enabled(self) -> bool:
        return self.bot_token is not None or self.client_id is not None
