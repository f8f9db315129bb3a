"""The one place that reads settings.

Env vars (`CONFIDANTE_*` and the platforms' usual token names) win over an optional
`confidante.toml` in the working directory (or the file named by `CONFIDANTE_CONFIG`).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

BUNDLED_MODEL = "bundled:smollm2"


def _toml_path() -> Path:
    return Path(os.environ.get("CONFIDANTE_CONFIG", "confidante.toml"))


def _platform(name: str, env: str) -> Field:
    """A setting readable as `CONFIDANTE_<NAME>` and as the platform's usual `<ENV>` variable."""
    return Field(default=None, validation_alias=AliasChoices(env, f"CONFIDANTE_{env}", name))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CONFIDANTE_", extra="ignore", populate_by_name=True, case_sensitive=False
    )

    # storage and models
    data_dir: Path = Path("data")
    model: str = BUNDLED_MODEL
    model_cache_dir: Path | None = None
    device: str = "auto"
    dtype: Literal["auto", "bfloat16", "float32", "float16"] = "auto"
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    context_tokens: int = 2048
    persona: str = (
        "You are Confidante, a warm, concise personal assistant. You remember what this person "
        "told you before and use it when it helps."
    )

    # batching and per-person adapters (core/llm/engine.py, core/llm/adapters.py, workers/training.py)
    max_batch: int = 16
    adapters_enabled: bool = True
    adapter_cache_count: int = 16
    adapter_cache_bytes: int = 256 * 2**20
    adapter_max_rank: int = 8  # serving slots; every extra rank costs time in each mixed batch
    adapter_rank: int = 8
    adapter_min_new_items: int = 10
    adapter_include_group_memories: bool = False
    adapter_ppl_tolerance: float = 0.05
    adapter_train_epochs: int = 3
    adapter_replay_ratio: float = 0.5

    # background work
    broker_url: str | None = None
    consolidate_after_turns: int = 4
    consolidate_idle_seconds: int = 300

    # privacy and access
    log_content: bool = False
    log_level: str = "INFO"
    max_message_chars: int = 16_000
    access: Literal["open", "users", "chats"] = "open"
    allowed_users: list[str] = Field(default_factory=list)
    allowed_chats: list[str] = Field(default_factory=list)
    admins: list[str] = Field(default_factory=list)
    rate_per_minute_person: float = 20.0
    rate_burst_person: int = 10
    rate_per_minute_chat: float = 60.0
    rate_burst_chat: int = 30

    # Telegram
    telegram_bot_token: SecretStr | None = _platform("telegram_bot_token", "TELEGRAM_BOT_TOKEN")
    telegram_webhook_url: str | None = None
    telegram_webhook_secret: SecretStr | None = None
    telegram_webhook_listen: str = "127.0.0.1"
    telegram_webhook_port: int = 8443
    telegram_api_url: str | None = None

    # Slack
    slack_bot_token: SecretStr | None = _platform("slack_bot_token", "SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = _platform("slack_signing_secret", "SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = _platform("slack_app_token", "SLACK_APP_TOKEN")
    slack_client_id: str | None = _platform("slack_client_id", "SLACK_CLIENT_ID")
    slack_client_secret: SecretStr | None = _platform("slack_client_secret", "SLACK_CLIENT_SECRET")
    slack_api_url: str | None = None
    slack_http_host: str = "127.0.0.1"
    slack_http_port: int = 3000

    # Matrix
    matrix_homeserver: str | None = None
    matrix_user_id: str | None = None
    matrix_access_token: SecretStr | None = None
    matrix_password: SecretStr | None = None
    matrix_allowed_inviters: list[str] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_toml_path())
        return init_settings, env_settings, toml, file_secret_settings

    @property
    def telegram_enabled(self) -> bool:
        return self.telegram_bot_token is not None

    @property
    def slack_enabled(self) -> bool:
        return self.slack_bot_token is not None or self.slack_client_id is not None

    @property
    def matrix_enabled(self) -> bool:
        return self.matrix_homeserver is not None and self.matrix_user_id is not None

    @property
    def models_dir(self) -> Path:
        """Where converted models live (default: inside the data dir)."""
        return self.model_cache_dir or self.data_dir / "models"

    def ensure_data_dir(self) -> Path:
        """Create the data dir private to this user: it holds everything people told us."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        return self.data_dir


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
