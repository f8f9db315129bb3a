"""The one stand-in for the core that every channel test shares (Telegram, Slack, Matrix).

It keeps the contract of `bots.channel.ChannelAssistant`, records what the channel handed it,
and answers with a script, for tests about a channel alone, where the reply's content must be
exact; the integration tests use the real Assistant. The command list is the core's real menu.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from core.commands import MENU
from core.messages import Button, Document, Incoming, Reply

ReplyFn = Callable[[Incoming], "Reply | str | None"]


async def chunks(text: str, size: int = 7, delay: float = 0.0) -> AsyncIterator[str]:
    """`text` in pieces of `size` characters, `delay` seconds apart (a model writing)."""
    for i in range(0, len(text), size):
        if delay:
            await asyncio.sleep(delay)
        yield text[i : i + size]


class ScriptedAssistant:
    """Answers every addressed, unedited message with `reply(msg)`: a `Reply` as it is, a string
    streamed `chunk` words at a time, `delay` seconds apart. `answer` is a fixed string reply;
    with `echo_commands` a command gets "command /<name>" with `buttons` and `document`."""

    def __init__(
        self,
        reply: ReplyFn | None = None,
        *,
        answer: str | None = None,
        delay: float = 0.03,
        chunk: int = 2,
        echo_commands: bool = False,
    ) -> None:
        if reply is None:
            reply = (lambda msg: answer) if answer is not None else (lambda msg: f"You said: {msg.text}")
        self.reply = reply
        self.delay = delay
        self.chunk = chunk
        self.echo_commands = echo_commands
        self.received: list[Incoming] = []
        self.redacted: list[tuple[str, str, str]] = []
        self.closed: list[tuple[str, str]] = []
        self.opened: list[tuple[str, str]] = []
        self.consumed = asyncio.Event()  # set when a streamed answer was read to its end
        self.buttons: list[Button] = []
        self.document: Document | None = None

    @property
    def seen(self) -> list[Incoming]:
        return self.received

    def accept(self, msg: Incoming) -> None:
        """The real core records it in its inbox; nothing survives a restart here."""

    def dismiss(self, msg: Incoming) -> None:
        """The channel answered it itself."""

    def reading(self, msg: Incoming) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    async def unanswered(self, platform: str) -> list[Incoming]:
        return []

    async def handle(self, msg: Incoming) -> Reply | None:
        self.received.append(msg)
        if not msg.addressed or msg.edited:
            return None
        if self.echo_commands and msg.text.startswith("/"):
            return Reply(text=f"command {msg.text}", buttons=list(self.buttons), document=self.document)
        answer = self.reply(msg)
        if answer is None or isinstance(answer, Reply):
            return answer
        return Reply(stream=self._stream(answer))

    async def _stream(self, text: str) -> AsyncIterator[str]:
        words = text.split(" ")
        for i in range(0, len(words), self.chunk):
            if self.delay:
                await asyncio.sleep(self.delay)
            yield (" " if i else "") + " ".join(words[i : i + self.chunk])
        self.consumed.set()

    async def redact(self, platform: str, chat_id: str, message_id: str) -> None:
        self.redacted.append((platform, chat_id, message_id))

    async def chat_closed(self, platform: str, chat_id: str) -> None:
        self.closed.append((platform, chat_id))

    async def chat_opened(self, platform: str, chat_id: str) -> None:
        self.opened.append((platform, chat_id))

    def command_list(self) -> list[tuple[str, str]]:
        return list(MENU)
