"""The terminal chat's own settings: a section of the process's settings (bots/settings.py).
Environment: `CONFIDANTE_CONSOLE_<NAME>` or `CONFIDANTE_CONSOLE__<NAME>`."""

from __future__ import annotations

from pydantic import BaseModel


class ConsoleSettings(BaseModel):
    reply_chars: int = 32_000  # the longest reply; a terminal has no message size
