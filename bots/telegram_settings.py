"""Telegram's own settings: a section of the process's settings (bots/settings.py), read with
all the others in core/config.py. Environment: `TELEGRAM_BOT_TOKEN`, `CONFIDANTE_TELEGRAM_<NAME>`
or `CONFIDANTE_TELEGRAM__<NAME>`; confidante.toml: a `[telegram]` table."""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, Field, SecretStr


class TelegramSettings(BaseModel):
    # the bot's token from @BotFather; set, it turns Telegram on
    bot_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("bot_token", "TELEGRAM_BOT_TOKEN")
    )
    # a public https URL Telegram posts updates to; unset: long polling
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = 8443
    api_url: str | None = None  # another Bot API server (a local one, or a test's fake)
    drafts: bool = True  # stream direct replies with sendMessageDraft when the Bot API has it
    edit_interval: float = 1.0  # seconds between edits of a live reply, per chat
    typing_interval: float = 4.0  # the typing action expires after ~5 s: renew before
    poll_timeout: int = 10  # long-polling getUpdates timeout, seconds
    flood_retries: int = 3  # RetryAfter (429) retries, each waiting what Telegram asks
    reply_chars: int = 8_192  # the longest reply, sent as messages of at most 4096 UTF-16 units

    @property
    def enabled(self) -> bool:
        return self.bot_token is not None
