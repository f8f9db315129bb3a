"""Matrix's own settings: a section of the process's settings (bots/settings.py), read with all
the others in core/config.py. Environment: `CONFIDANTE_MATRIX_<NAME>` or
`CONFIDANTE_MATRIX__<NAME>`; confidante.toml: a `[matrix]` table."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr


class MatrixSettings(BaseModel):
    # the homeserver's URL and the bot's account on it; both set, they turn Matrix on
    homeserver: str | None = None
    user_id: str | None = None
    # an access token, or a password to log in with once (the token is then kept in the data dir)
    access_token: SecretStr | None = None
    password: SecretStr | None = None
    # who may invite the bot: "@user:server", "server" or "*"; empty = users of its own homeserver
    allowed_inviters: list[str] = Field(default_factory=list)
    device_name: str = "Confidante"
    # messages that arrived while the bot was down are answered if younger than this, else only recorded
    catchup_max_age_seconds: int = 3600
    edit_interval_seconds: float = 1.0
    # E2E: "send" = share keys with unverified devices without marking them verified (default),
    # "trust" = mark every device seen as verified (trust on first use), "refuse" = never send to them
    unverified_devices: Literal["send", "trust", "refuse"] = "send"
    backoff_max_seconds: float = 60.0
    sync_timeout_ms: int = 30_000
    reply_chars: int = 16_000  # the longest reply

    @property
    def enabled(self) -> bool:
        return self.homeserver is not None and self.user_id is not None
