"""Platform-neutral messages: what a channel hands the core and what the core hands back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

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
    # whether the sender administers this group chat; channels ask the platform only when
    # core/chat_admin.py needs it (None: not asked)
    sender_admin: bool | None = None
    # the wider place the chat belongs to, when its platform has one (a Slack workspace): an
    # allow-list may name it alone ("slack:T1"), so the channel says it and core parses no ids
    workspace: str | None = None


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


class Receipt(Protocol):
    """The inbox entry a reply answers (core/inbox.py)."""

    def sent(self, reply_id: str) -> None: ...
    def answered(self) -> None: ...
    def abandoned(self) -> None: ...


@dataclass
class Reply:
    """What the channel renders.

    Either `text` is complete, or `stream` yields text deltas as the model makes them; the
    channel renders them progressively (edits, drafts) and must exhaust the stream, because
    the assistant records its turn when the stream ends.

    Delivery is reported back so a crash loses no answer: `sent(id)` as soon as the platform
    returns a reply message's id, `finished()` once the last write is done. `earlier` holds the
    ids of reply messages an earlier run already sent for this message (cut off by a crash):
    the channel continues in the first of them instead of sending another.
    """

    text: str = ""
    stream: AsyncIterator[str] | None = None
    document: Document | None = None
    buttons: list[Button] = field(default_factory=list)
    thread_id: str | None = None
    reply_to: str | None = None
    earlier: tuple[str, ...] = ()
    receipt: Receipt | None = None

    def sent(self, reply_id: object) -> None:
        if self.receipt is not None:
            self.receipt.sent(str(reply_id))

    def finished(self) -> None:
        if self.receipt is not None:
            self.receipt.answered()
            self.receipt = None

    def abandon(self) -> None:
        """Delivery failed and nothing reached the person (the connection is gone): the message
        stays unanswered, no longer counts as being answered, and is answered once the channel
        works again (core/recovery.py)."""
        if self.receipt is not None:
            self.receipt.abandoned()
            self.receipt = None

    async def collect(self) -> str:
        """The whole text, consuming the stream if there is one."""
        if self.stream is None:
            self.finished()
            return self.text
        parts = [chunk async for chunk in self.stream]
        self.text = "".join(parts)
        self.stream = None
        self.finished()
        return self.text
