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
    from core.config import Settings

    text = (ROOT / "docs" / "settings.md").read_text()
    for name in Settings.model_fields:
        if not isinstance(Settings.model_fields[name].annotation, type) or not issubclass(
            Settings.model_fields[name].annotation, BaseModel
        ):
            assert f"_{name.upper()}`" in text, name


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
    """A channel's own settings (a nested model) are listed under their own heading, with the
    variable the nested delimiter makes."""
    gen = _generator()
    lines = gen.sections(_Nested, "CONFIDANTE_", "__", "Settings")
    text = "\n".join(lines)
    assert "## Settings: telegram" in text
    assert "| `CONFIDANTE_TELEGRAM__TOKEN` | secret | unset | the bot's token from BotFather |" in text
    assert "| `CONFIDANTE_TELEGRAM__EDIT_INTERVAL` | float | `1.0` | seconds between edits |" in text
    assert "| **storage** | | | |" in text and "`CONFIDANTE_DATA_DIR`" in text
