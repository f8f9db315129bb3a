"""docs/settings.md is generated from the Settings class: it fails here when they drift."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_settings", ROOT / "docs" / "gen_settings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_settings_reference_matches_the_settings_class():
    gen = _generator()
    assert (ROOT / "docs" / "settings.md").read_text() == gen.render(), (
        "docs/settings.md is out of date: run .venv/bin/python docs/gen_settings.py"
    )


def test_every_field_is_documented_once():
    from bots.settings import ChannelSettings
    from core.config import sections

    text = (ROOT / "docs" / "settings.md").read_text()
    for name, info in ChannelSettings.model_fields.items():
        if not isinstance(info.annotation, type) or not issubclass(info.annotation, BaseModel):
            assert text.count(f"`CONFIDANTE_{name.upper()}`") == 1, name
    for section, model in sections(ChannelSettings).items():
        assert f"## Settings: {section}" in text
        for name in model.model_fields:
            assert text.count(f"`CONFIDANTE_{section.upper()}_{name.upper()}`") == 1, (section, name)


class _Telegram(BaseModel):
    # the bot's token from BotFather
    token: SecretStr | None = None
    edit_interval: float = 1.0  # seconds between edits


class _Nested(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONFIDANTE_", env_nested_delimiter="__")

    # storage
    data_dir: Path = Path("data")
    telegram: _Telegram = _Telegram()


def test_nested_models_get_a_section_with_their_variables():
    """A channel's own settings (a nested model) are listed under their own heading, by the
    names core/config.py reads them from; the nested delimiter's form is said once."""
    gen = _generator()
    lines = gen.sections(_Nested, "CONFIDANTE_", "__", "Settings")
    text = "\n".join(lines)
    assert "## Settings: telegram" in text
    assert "`CONFIDANTE_TELEGRAM__<NAME>`" in text and "`[telegram]` table" in text
    assert "| `CONFIDANTE_TELEGRAM_TOKEN` | secret | unset | the bot's token from BotFather |" in text
    assert "| `CONFIDANTE_TELEGRAM_EDIT_INTERVAL` | float | `1.0` | seconds between edits |" in text
    assert "| **storage** | | | |" in text and "`CONFIDANTE_DATA_DIR`" in text
