"""Chat with the assistant in a terminal: the channel that needs no platform and no server."""

from __future__ import annotations

import sys
import uuid

from rich.console import Console

from core.assistant import Assistant
from core.messages import Incoming, Reply

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


async def chat(assistant: Assistant, person: str, console: Console | None = None) -> None:
    """Read lines until /exit or end of input; every line is one message."""
    console = console or Console(highlight=False)
    interactive = sys.stdin.isatty()
    if interactive:
        console.print(
            f"[bold]Confidante[/bold] — talking with [cyan]{person}[/cyan]. /help lists commands, /exit quits."
        )
    while True:
        try:
            line = console.input("[bold cyan]you>[/bold cyan] ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            break
        if not interactive and line == "":
            break
        line = line.rstrip("\n")
        if line.strip() in EXIT_WORDS:
            break
        msg = Incoming(
            platform="console",
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
