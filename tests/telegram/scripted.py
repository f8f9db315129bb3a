"""A stand-in for the core used by channel-only tests, where the reply's content must be exact.

It keeps the Assistant contract (handle / chat_closed / command_list) and records what the
channel handed it; integration tests use the real Assistant instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from core.messages import Incoming, Reply

COMMANDS = [
    ("help", "What I can do"),
    ("memory", "What I remember about you"),
    ("forget", "Forget something"),
    ("export", "Download everything as JSON"),
    ("forget_me", "Erase everything about you"),
    ("pause", "Stop remembering"),
    ("resume", "Remember again"),
    ("link", "Link another account"),
]


async def chunks(text: str, size: int = 7, delay: float = 0.0) -> AsyncIterator[str]:
    for i in range(0, len(text), size):
        if delay:
            await asyncio.sleep(delay)
        yield text[i : i + size]


@dataclass
class ScriptedAssistant:
    reply: Callable[[Incoming], Reply | None] = lambda msg: Reply(
        stream=chunks(f"You said: {msg.text}", delay=0.03)
    )
    received: list[Incoming] = field(default_factory=list)
    closed: list[tuple[str, str]] = field(default_factory=list)

    def accept(self, msg: Incoming) -> None:
        """The real core records it in its inbox; nothing survives a restart here."""

    def dismiss(self, msg: Incoming) -> None:
        """The channel answered it itself."""

    async def unanswered(self, platform: str) -> list[Incoming]:
        return []

    async def handle(self, msg: Incoming) -> Reply | None:
        self.received.append(msg)
        if not msg.addressed or msg.edited:
            return None
        return self.reply(msg)

    async def chat_closed(self, platform: str, chat_id: str) -> None:
        self.closed.append((platform, chat_id))

    def command_list(self) -> list[tuple[str, str]]:
        return list(COMMANDS)
