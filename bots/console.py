"""Chat with the assistant in a terminal: the channel that needs no platform and no server.

Lines are read on a daemon thread, so the event loop stays free while the person types: the
reminder dispatcher prints a reminder that falls due into the session as it happens (and, at
the start, those that fell due while no session ran, with a "late" note). A session delivers
only its own person's console reminders; another person's wait for their session.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import uuid

from rich.console import Console

from core.assistant import Assistant
from core.messages import Button, Incoming, Reply
from core.reminders.dispatch import Channel

EXIT_WORDS = {"/exit", "/quit"}


async def render(reply: Reply, console: Console) -> str:
    """Print the reply as it streams; returns the whole text."""
    if reply.stream is None:
        console.print(reply.text, markup=False, highlight=False)
        text = reply.text
    else:
        parts = []
        async for delta in reply.stream:
            parts.append(delta)
            console.print(delta, end="", markup=False, highlight=False, soft_wrap=True)
            console.file.flush()
        console.print()
        text = "".join(parts)
    if reply.document is not None:
        path = reply.document.filename
        with open(path, "wb") as out:
            out.write(reply.document.content)
        console.print(f"[dim](saved {path})[/dim]")
    for button in reply.buttons:
        console.print(f"[dim]→ {button.label}: type {button.command}[/dim]")
    reply.finished()
    return text


PLATFORM = "console"
PROMPT = "[bold cyan]you>[/bold cyan] "


class _Reader:
    """Lines from the terminal (None at end of input), read on a daemon thread so the event
    loop stays free (a session that ends mid-prompt does not wait for the line). The next
    prompt waits until the previous line's reply was printed."""

    def __init__(self, console: Console, interactive: bool, loop: asyncio.AbstractEventLoop) -> None:
        self.lines: asyncio.Queue[str | None] = asyncio.Queue()
        self.ready = threading.Event()
        self.ready.set()
        self._console, self._interactive, self._loop = console, interactive, loop
        threading.Thread(target=self._read, name="console-input", daemon=True).start()

    def _put(self, line: str | None) -> None:
        self._loop.call_soon_threadsafe(self.lines.put_nowait, line)

    def _read(self) -> None:
        while True:
            self.ready.wait()
            self.ready.clear()
            try:
                line = self._console.input(PROMPT) if self._interactive else sys.stdin.readline()
            except (EOFError, KeyboardInterrupt):
                line = None
            if line is None or (not self._interactive and line == ""):
                self._put(None)
                return
            self._put(line.rstrip("\n"))
            if line.strip() in EXIT_WORDS:
                return


def reminder_channel(console: Console, person: str, interactive: bool) -> Channel:
    """Reminders into this terminal session; only this person's console chat."""

    async def send(chat_id: str, text: str, *, key: str, thread_id: str | None, buttons: list[Button]) -> str:
        console.print()
        console.print(text, markup=False, highlight=False)
        for button in buttons:
            console.print(f"[dim]→ {button.label}: type {button.command}[/dim]")
        if interactive:
            console.print(PROMPT, end="")
        console.file.flush()
        return uuid.uuid4().hex

    return Channel(send, serves=lambda chat_id: chat_id == person)


async def chat(assistant: Assistant, person: str, console: Console | None = None) -> None:
    """Read lines until /exit or end of input; every line is one message. Reminders set here
    are printed here while the session runs."""
    console = console or Console(highlight=False)
    interactive = sys.stdin.isatty()
    if interactive:
        console.print(
            f"[bold]Confidante[/bold] — talking with [cyan]{person}[/cyan]. /help lists commands, /exit quits."
        )
    reminders = getattr(assistant, "reminders", None)
    if reminders is not None:
        reminders.dispatcher.attach(PLATFORM, reminder_channel(console, person, interactive))
    reader = _Reader(console, interactive, asyncio.get_running_loop())
    try:
        while True:
            line = await reader.lines.get()
            if line is None or line.strip() in EXIT_WORDS:
                break
            msg = Incoming(
                platform=PLATFORM,
                chat_id=person,
                sender_id=person,
                sender_name=person,
                text=line,
                message_id=uuid.uuid4().hex,
            )
            reply = await assistant.handle(msg)
            if reply is not None:
                if interactive:
                    console.print("[bold magenta]confidante>[/bold magenta] ", end="")
                await render(reply, console)
            reader.ready.set()
    finally:
        if reminders is not None:
            await reminders.dispatcher.detach(PLATFORM)
