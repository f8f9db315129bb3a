"""Reminders in the console session (`confidante chat`): set there, printed there while the
session runs, printed late with a note at the next session when they fell due between
sessions; another person's console reminder never shows up in this session."""

from __future__ import annotations

import asyncio
import io
import os
import time

from rich.console import Console

from bots.console import chat
from core.assistant import build_assistant
from core.config import Settings
from core.llm.engine import Engine
from tests.reminders.conftest import clock_at, real_time_of


class Terminal:
    """A pipe as stdin and a string as the screen: what a person types and sees."""

    def __init__(self, monkeypatch) -> None:
        read, self._write = os.pipe()
        monkeypatch.setattr("sys.stdin", os.fdopen(read, "r"))
        self.screen = io.StringIO()
        self.console = Console(file=self.screen, width=200, highlight=False)

    def type(self, line: str) -> None:
        os.write(self._write, (line + "\n").encode())

    async def wait_for(self, needle: str, timeout: float = 15.0) -> float:
        deadline = time.monotonic() + timeout
        while needle not in self.screen.getvalue():
            assert time.monotonic() < deadline, (
                f"waited for {needle!r}; the screen shows {self.screen.getvalue()!r}"
            )
            await asyncio.sleep(0.05)
        return time.time()


async def session(settings: Settings, tiny_model, monkeypatch, person: str, script) -> str:  # noqa: ANN001
    engine = Engine(tiny_model, settings)
    assistant = build_assistant(settings, engine=engine)
    term = Terminal(monkeypatch)
    try:
        running = asyncio.create_task(chat(assistant, person, console=term.console))
        await script(term)
        term.type("/exit")
        await asyncio.wait_for(running, timeout=10)
    finally:
        assistant.close()
        engine.close()
    return term.screen.getvalue()


async def test_a_console_reminder_is_printed_into_the_running_session_and_late_into_the_next(
    tmp_path, tiny_model, monkeypatch
):
    data = tmp_path / "data"
    settings = Settings(data_dir=data, max_new_tokens=4, _env_file=None, **clock_at("2026-12-04 17:59:57"))

    async def set_and_wait(term: Terminal) -> None:
        term.type("remind me to stretch at 18:00")
        await term.wait_for("I'll remind you on Fri 4 Dec at 18:00")
        arrived = await term.wait_for("⏰ Reminder: stretch")
        due = real_time_of(settings, "2026-12-04 18:00:00")
        assert 0 <= arrived - due < 5, f"arrived {arrived - due:.2f} s after its time"
        term.type("remind me at 18:30 to call mum")
        await term.wait_for("I'll remind you on Fri 4 Dec at 18:30")

    screen = await session(settings, tiny_model, monkeypatch, "dana", set_and_wait)
    assert screen.count("⏰ Reminder: stretch") == 1
    assert "Snooze 10 min: type /reminders snooze" in screen

    async def erik_sets_one(term: Terminal) -> None:
        term.type("remind me at 18:20 to feed the fish")
        await term.wait_for("I'll remind you")

    await session(settings, tiny_model, monkeypatch, "erik", erik_sets_one)

    # the next session of dana's starts after 18:30: the call comes late, with a note, once;
    # erik's fish (due 18:20) is not dana's to see
    later = settings.model_copy(update=clock_at("2026-12-04 18:45:00"))

    async def comes_back(term: Terminal) -> None:
        await term.wait_for("⏰ Reminder: call mum (late: I was offline at 18:30)")
        await asyncio.sleep(0.5)

    screen = await session(later, tiny_model, monkeypatch, "dana", comes_back)
    assert screen.count("⏰ Reminder:") == 1 and "feed the fish" not in screen
