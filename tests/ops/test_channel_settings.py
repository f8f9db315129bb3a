"""Each channel owns its settings (bots/*_settings.py), nested in the process's settings, and
core/config.py still reads them all: every environment name the docs and the deployment files
use lands in the right section field, and so do both confidante.toml forms."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bots.channel import CHANNELS
from bots.settings import ChannelSettings
from core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
PLATFORM_NAME = re.compile(r"\b(?:CONFIDANTE_)?(?:TELEGRAM|SLACK|MATRIX)_[A-Z_]*[A-Z]\b")

# every platform variable in use: (name, value set, section, field, value read)
ENV = [
    ("TELEGRAM_BOT_TOKEN", "1:tg", "telegram", "bot_token", "1:tg"),
    ("CONFIDANTE_TELEGRAM_WEBHOOK_URL", "https://x/hook", "telegram", "webhook_url", "https://x/hook"),
    ("CONFIDANTE_TELEGRAM_WEBHOOK_SECRET", "s3cret", "telegram", "webhook_secret", "s3cret"),
    ("CONFIDANTE_TELEGRAM_WEBHOOK_LISTEN", "0.0.0.0", "telegram", "webhook_listen", "0.0.0.0"),
    ("CONFIDANTE_TELEGRAM_WEBHOOK_PORT", "8444", "telegram", "webhook_port", 8444),
    (
        "CONFIDANTE_TELEGRAM_API_URL",
        "http://bot-api:8081/bot",
        "telegram",
        "api_url",
        "http://bot-api:8081/bot",
    ),
    ("CONFIDANTE_TELEGRAM_DRAFTS", "0", "telegram", "drafts", False),
    ("CONFIDANTE_TELEGRAM_EDIT_INTERVAL", "1.5", "telegram", "edit_interval", 1.5),
    ("CONFIDANTE_TELEGRAM_TYPING_INTERVAL", "3", "telegram", "typing_interval", 3.0),
    ("CONFIDANTE_TELEGRAM_POLL_TIMEOUT", "20", "telegram", "poll_timeout", 20),
    ("CONFIDANTE_TELEGRAM_FLOOD_RETRIES", "5", "telegram", "flood_retries", 5),
    ("CONFIDANTE_TELEGRAM_REPLY_CHARS", "4000", "telegram", "reply_chars", 4000),
    ("SLACK_BOT_TOKEN", "xoxb-1", "slack", "bot_token", "xoxb-1"),
    ("SLACK_SIGNING_SECRET", "sign", "slack", "signing_secret", "sign"),
    ("SLACK_APP_TOKEN", "xapp-1", "slack", "app_token", "xapp-1"),
    ("SLACK_CLIENT_ID", "1.2", "slack", "client_id", "1.2"),
    ("SLACK_CLIENT_SECRET", "client", "slack", "client_secret", "client"),
    ("CONFIDANTE_SLACK_API_URL", "http://slack/api/", "slack", "api_url", "http://slack/api/"),
    ("CONFIDANTE_SLACK_HTTP_HOST", "0.0.0.0", "slack", "http_host", "0.0.0.0"),
    ("CONFIDANTE_SLACK_HTTP_PORT", "3001", "slack", "http_port", 3001),
    ("CONFIDANTE_SLACK_STREAM_MODE", "update", "slack", "stream_mode", "update"),
    ("CONFIDANTE_SLACK_UPDATE_INTERVAL", "2", "slack", "update_interval", 2.0),
    (
        "CONFIDANTE_SLACK_PUBLIC_URL",
        "https://slack.example.org",
        "slack",
        "public_url",
        "https://slack.example.org",
    ),
    ("CONFIDANTE_SLACK_REPLY_CHARS", "9000", "slack", "reply_chars", 9000),
    ("CONFIDANTE_MATRIX_HOMESERVER", "https://hs", "matrix", "homeserver", "https://hs"),
    ("CONFIDANTE_MATRIX_USER_ID", "@bot:hs", "matrix", "user_id", "@bot:hs"),
    ("CONFIDANTE_MATRIX_ACCESS_TOKEN", "syt_x", "matrix", "access_token", "syt_x"),
    ("CONFIDANTE_MATRIX_PASSWORD", "pw", "matrix", "password", "pw"),
    (
        "CONFIDANTE_MATRIX_ALLOWED_INVITERS",
        '["@ann:hs", "example.org"]',
        "matrix",
        "allowed_inviters",
        ["@ann:hs", "example.org"],
    ),
    ("CONFIDANTE_MATRIX_DEVICE_NAME", "Bot", "matrix", "device_name", "Bot"),
    ("CONFIDANTE_MATRIX_CATCHUP_MAX_AGE_SECONDS", "60", "matrix", "catchup_max_age_seconds", 60),
    ("CONFIDANTE_MATRIX_EDIT_INTERVAL_SECONDS", "0.5", "matrix", "edit_interval_seconds", 0.5),
    ("CONFIDANTE_MATRIX_UNVERIFIED_DEVICES", "refuse", "matrix", "unverified_devices", "refuse"),
    ("CONFIDANTE_MATRIX_BACKOFF_MAX_SECONDS", "5", "matrix", "backoff_max_seconds", 5.0),
    ("CONFIDANTE_MATRIX_SYNC_TIMEOUT_MS", "1000", "matrix", "sync_timeout_ms", 1000),
    ("CONFIDANTE_MATRIX_REPLY_CHARS", "7000", "matrix", "reply_chars", 7000),
    # the nested form, as docs/configuration.md shows it
    ("CONFIDANTE_TELEGRAM__WEBHOOK_URL", "https://y/hook", "telegram", "webhook_url", "https://y/hook"),
    # the CONFIDANTE_ form of a platform's usual name
    ("CONFIDANTE_TELEGRAM_BOT_TOKEN", "2:tg", "telegram", "bot_token", "2:tg"),
    ("CONFIDANTE_SLACK_BOT_TOKEN", "xoxb-2", "slack", "bot_token", "xoxb-2"),
    ("CONFIDANTE_SLACK_SIGNING_SECRET", "sign2", "slack", "signing_secret", "sign2"),
    ("CONFIDANTE_SLACK_APP_TOKEN", "xapp-2", "slack", "app_token", "xapp-2"),
    ("CONFIDANTE_SLACK_CLIENT_ID", "3.4", "slack", "client_id", "3.4"),
    ("CONFIDANTE_SLACK_CLIENT_SECRET", "client2", "slack", "client_secret", "client2"),
]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No platform variable from the machine, and no confidante.toml unless a test writes one."""
    import os

    for name in list(os.environ):
        if PLATFORM_NAME.fullmatch(name.upper()) or name.upper().startswith("CONFIDANTE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CONFIDANTE_CONFIG", str(tmp_path / "confidante.toml"))
    return monkeypatch


def _value(settings: ChannelSettings, section: str, field: str):
    value = getattr(getattr(settings, section), field)
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


@pytest.mark.parametrize(("env", "raw", "section", "field", "expected"), ENV, ids=[e[0] for e in ENV])
def test_every_platform_variable_lands_in_its_channels_section(clean_env, env, raw, section, field, expected):
    clean_env.setenv(env, raw)
    assert _value(ChannelSettings(), section, field) == expected


def test_every_platform_variable_the_docs_and_deployment_files_name_is_checked_here():
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "infra").rglob("*")]
    named = set()
    for path in files:
        if path.is_file() and path.suffix in {".md", ".yml", ".yaml", ".example", ".service", ".sh", ""}:
            named |= set(PLATFORM_NAME.findall(path.read_text(errors="replace")))
    assert named - {e[0] for e in ENV} == set()
    assert {"TELEGRAM_BOT_TOKEN", "SLACK_BOT_TOKEN", "CONFIDANTE_MATRIX_HOMESERVER"} <= named


def test_the_nested_form_reads_too_and_wins_over_the_flat_one(clean_env):
    clean_env.setenv("CONFIDANTE_TELEGRAM__POLL_TIMEOUT", "30")
    clean_env.setenv("CONFIDANTE_TELEGRAM_POLL_TIMEOUT", "20")
    clean_env.setenv("CONFIDANTE_MATRIX__ALLOWED_INVITERS", '["*"]')
    settings = ChannelSettings()
    assert settings.telegram.poll_timeout == 30
    assert settings.matrix.allowed_inviters == ["*"]


def test_the_platforms_usual_name_wins_over_the_confidante_one(clean_env):
    """As before sections: TELEGRAM_BOT_TOKEN first, then CONFIDANTE_TELEGRAM_BOT_TOKEN."""
    clean_env.setenv("TELEGRAM_BOT_TOKEN", "usual")
    clean_env.setenv("CONFIDANTE_TELEGRAM_BOT_TOKEN", "prefixed")
    assert _value(ChannelSettings(), "telegram", "bot_token") == "usual"


def test_confidante_toml_takes_flat_lines_and_section_tables_and_the_environment_wins(clean_env, tmp_path):
    (tmp_path / "confidante.toml").write_text(
        'data_dir = "/srv/confidante"\n'
        'telegram_bot_token = "1:flat"\n'
        "telegram_poll_timeout = 7\n"
        'slack_stream_mode = "update"\n'
        'matrix_allowed_inviters = ["@ann:hs"]\n'
        "\n"
        "[telegram]\n"
        "poll_timeout = 9\n"  # the table wins over the flat line in the same file
        "edit_interval = 2.5\n"
        "\n"
        "[matrix]\n"
        'homeserver = "https://hs"\n'
        'user_id = "@bot:hs"\n'
    )
    clean_env.setenv("SLACK_BOT_TOKEN", "xoxb-env")
    clean_env.setenv("CONFIDANTE_MATRIX_USER_ID", "@env:hs")
    settings = ChannelSettings()
    assert settings.data_dir == Path("/srv/confidante")
    assert _value(settings, "telegram", "bot_token") == "1:flat"
    assert (settings.telegram.poll_timeout, settings.telegram.edit_interval) == (9, 2.5)
    assert settings.slack.stream_mode == "update" and _value(settings, "slack", "bot_token") == "xoxb-env"
    assert settings.matrix.homeserver == "https://hs" and settings.matrix.allowed_inviters == ["@ann:hs"]
    assert settings.matrix.user_id == "@env:hs"  # the environment wins over the file
    assert [spec.name for spec in CHANNELS if spec.enabled(settings)] == ["telegram", "slack", "matrix"]


def test_a_bad_value_in_a_section_names_the_field(clean_env):
    clean_env.setenv("CONFIDANTE_TELEGRAM_WEBHOOK_PORT", "not-a-port")
    with pytest.raises(ValueError, match=r"telegram\.webhook_port"):
        ChannelSettings()


def test_core_settings_name_no_platform():
    """Platform rules live with their channel: no core field, default or limit names one."""
    platforms = {spec.name for spec in CHANNELS} | {"console"}
    for name, info in Settings.model_fields.items():
        default = info.default_factory() if info.default_factory else info.default
        assert not any(p in name for p in platforms), name
        assert not any(p in repr(default).lower() for p in platforms), name
    core = ChannelSettings.model_fields.keys() - Settings.model_fields.keys()
    assert core == platforms  # one section per channel, nothing else added


def test_reply_caps_come_from_each_channel_unless_overridden(clean_env):
    settings = ChannelSettings()
    assert [settings.reply_limit(p) for p in ("telegram", "slack", "matrix", "console", "web")] == [
        8_192,
        12_000,
        16_000,
        32_000,
        settings.max_reply_chars,
    ]
    clean_env.setenv("CONFIDANTE_REPLY_CHARS_BY_PLATFORM", '{"telegram": 100}')
    assert ChannelSettings().reply_limit("telegram") == 100
    assert Settings().reply_limit("telegram") == 100 and Settings().reply_limit("slack") == 8_000


def test_secrets_in_a_section_are_scrubbed_from_logs_too(clean_env):
    clean_env.setenv("SLACK_SIGNING_SECRET", "sign-me")
    clean_env.setenv("CONFIDANTE_MATRIX__PASSWORD", "pw-me")
    assert {"sign-me", "pw-me"} <= set(ChannelSettings().secret_values())
