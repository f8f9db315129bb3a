"""Platform-neutral messages: what a channel hands the core and what the core hands back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

ChatKind = Literal["direct", "group"]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Incoming:
    """One message as a channel received it.

    `addressed` is the channel's verdict on whether the assistant should answer (always true
    in a direct chat; in a group only when mentioned, replied to, or commanded).
    `sender_id` is unique on its platform (Slack: "TEAM:USER"); `chat_id` likewise.
    """

    platform: str
    chat_id: str
    sender_id: str
    text: str
    message_id: str
    chat_kind: ChatKind = "direct"
    sender_name: str = ""
    thread_id: str | None = None
    addressed: bool = True
    reply_to: str | None = None
    ts: datetime = field(default_factory=utcnow)
    edited: bool = False


@dataclass(frozen=True)
class Document:
    filename: str
    content: bytes
    mime: str = "application/json"


@dataclass(frozen=True)
class Button:
    """An action the channel may render as a button; pressing it sends `command` as a message."""

    label: str
    command: str


@dataclass
class Reply:
    """What the channel renders.

    Either `text` is complete, or `stream` yields text deltas as the model makes them; the
    channel renders them progressively (edits, drafts) and must exhaust the stream, because
    the assistant records its turn when the stream ends.
    """

    text: str = ""
    stream: AsyncIterator[str] | None = None
    document: Document | None = None
    buttons: list[Button] = field(default_factory=list)
    thread_id: str | None = None
    reply_to: str | None = None

    async def collect(self) -> str:
        """The whole text, consuming the stream if there is one."""
        if self.stream is None:
            return self.text
        parts = [chunk async for chunk in self.stream]
        self.text = "".join(parts)
        self.stream = None
        return self.text
