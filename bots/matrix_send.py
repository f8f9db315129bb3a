"""Sending to a Matrix room: retries, rate limits, E2E device policy, streaming by edits.

Every send keeps one transaction id across its retries, so a retry after a lost response is
deduplicated by the homeserver instead of posting the message twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import structlog
from aiohttp import ClientError
from nio import AsyncClient, RoomSendResponse
from nio.exceptions import OlmUnverifiedDeviceError

from bots.channel import Throttle, split_text, stream_edits
from bots.matrix_render import MAX_CONTENT_BYTES, edit_content, edit_size, message_content, with_relation

log = structlog.get_logger(__name__)

NETWORK_ERRORS = (ClientError, OSError, asyncio.TimeoutError)
UnverifiedPolicy = Literal["send", "trust", "refuse"]


class MatrixSendError(RuntimeError):
    """The homeserver refused a message for a reason retrying will not fix."""


def backoff_delays(first: float = 0.5, cap: float = 60.0) -> Callable[[], float]:
    """Exponential backoff with jitter; call it for the next delay."""
    attempt = 0

    def next_delay() -> float:
        nonlocal attempt
        delay = min(cap, first * 2**attempt)
        attempt += 1
        return delay * random.uniform(0.8, 1.2)

    return next_delay


class Outbox:
    def __init__(
        self,
        client: AsyncClient,
        *,
        unverified: UnverifiedPolicy = "send",
        edit_interval: float = 1.0,
        backoff_max: float = 60.0,
        give_up_after: float = 600.0,
        max_content_bytes: int = MAX_CONTENT_BYTES,
    ) -> None:
        self.client = client
        self.unverified = unverified
        self.edit_interval = edit_interval
        self.backoff_max = backoff_max
        self.give_up_after = give_up_after
        self.max_content_bytes = max_content_bytes
        self.rate_limited = 0  # times the homeserver said M_LIMIT_EXCEEDED (for logs and tests)

    def split(self, text: str) -> list[str]:
        """Parts whose final edit fits an event; "".join(parts) == text (streams count offsets)."""
        return split_text(text, self.max_content_bytes, length=edit_size, exact=True)

    def _apply_device_policy(self, room_id: str) -> None:
        """Mark devices per the owner's choice before keys are shared (encrypted rooms only)."""
        room = self.client.rooms.get(room_id)
        if not (room and room.encrypted and self.client.olm) or self.unverified == "send":
            return
        for user_id in room.users:
            for device in self.client.device_store.active_user_devices(user_id):
                if device.verified or device.blacklisted:
                    continue
                if self.unverified == "trust":
                    self.client.verify_device(device)
                else:
                    self.client.blacklist_device(device)

    async def send(
        self,
        room_id: str,
        content: dict[str, Any],
        event_type: str = "m.room.message",
        *,
        tx_id: str | None = None,
    ) -> str:
        """Send one event and return its id, waiting out rate limits and outages. A given
        `tx_id` makes the send idempotent across processes (the homeserver dedups it)."""
        tx_id = tx_id or str(uuid.uuid4())
        delays = backoff_delays(cap=self.backoff_max)
        deadline = time.monotonic() + self.give_up_after
        while True:
            try:
                self._apply_device_policy(room_id)
                resp = await self.client.room_send(
                    room_id, event_type, content, tx_id=tx_id, ignore_unverified_devices=True
                )
            except OlmUnverifiedDeviceError:
                # A device appeared between the policy pass and the send: apply it again.
                continue
            except NETWORK_ERRORS as exc:
                if time.monotonic() > deadline:
                    raise MatrixSendError(f"homeserver unreachable for {self.give_up_after:.0f}s") from exc
                delay = delays()
                log.warning(
                    "matrix.send_retry", room_id=room_id, error=type(exc).__name__, retry_in=round(delay, 2)
                )
                await asyncio.sleep(delay)
                continue
            if isinstance(resp, RoomSendResponse):
                return resp.event_id
            if resp.status_code == "M_LIMIT_EXCEEDED":
                self.rate_limited += 1
                wait = (resp.retry_after_ms or 1000) / 1000
                log.info("matrix.rate_limited", room_id=room_id, retry_after_s=wait)
                await asyncio.sleep(wait)
                continue
            raise MatrixSendError(f"{resp.status_code}: {resp.message}")

    async def send_text(
        self,
        room_id: str,
        text: str,
        relation: dict[str, Any] | None = None,
        *,
        earlier: str | None = None,
        on_sent: Callable[[str], None] | None = None,
    ) -> list[str]:
        """Send a whole text, split below the event size limit; the relation goes on every part.
        `earlier` and `on_sent` as for `stream`."""
        ids = []
        for part in self.split(text):
            if not part.strip():
                continue
            if earlier is not None:
                await self.edit(room_id, earlier, part.strip())
                ids.append(earlier)
                earlier = None
                continue
            ids.append(await self.send(room_id, with_relation(message_content(part.strip()), relation)))
            if on_sent:
                on_sent(ids[-1])
        return ids

    async def edit(self, room_id: str, event_id: str, text: str) -> str:
        return await self.send(room_id, edit_content(event_id, text))

    async def stream(
        self,
        room_id: str,
        deltas: AsyncIterator[str],
        relation: dict[str, Any] | None = None,
        on_first: Callable[[], Awaitable[None]] | None = None,
        *,
        earlier: str | None = None,
        on_sent: Callable[[str], None] | None = None,
    ) -> tuple[str, list[str]]:
        """Show a streamed reply as one message edited as text arrives (at most every
        `edit_interval` seconds); the final edit holds the whole part. A reply that outgrows
        the size limit continues in a new message. Returns the full text and the message ids.

        `earlier`: a message an earlier run started for this reply (edited, not sent again);
        `on_sent` hears each new message's id as soon as the homeserver returns it."""
        done = 0  # chars of the text already finished in earlier messages
        event_id: str | None = earlier
        shown = ""
        ids: list[str] = []

        async def show_part(part: str) -> None:
            nonlocal event_id, shown
            body = part.strip()
            if not body or body == shown:
                return
            if event_id is None:
                event_id = await self.send(room_id, with_relation(message_content(body), relation))
                ids.append(event_id)
                if on_sent:
                    on_sent(event_id)
                if on_first:
                    await on_first()
            else:
                await self.edit(room_id, event_id, body)
            shown = body

        async def show(text: str, final: bool) -> None:
            nonlocal done, event_id, shown
            current = text[done:]
            # Cheap bound first: only measure rendered sizes when the part could be near the limit.
            if len(current.encode()) * 8 + 1024 > self.max_content_bytes:
                for part in self.split(current)[:-1]:
                    await show_part(part)
                    done += len(part)
                    event_id, shown = None, ""
            await show_part(text[done:])

        # One edit per interval at most; a send that waits out M_LIMIT_EXCEEDED holds the next
        # edit back, so the edits slow down to what the homeserver allows.
        text = await stream_edits(deltas, show, Throttle(self.edit_interval), room_id)
        return text, ids


# Matrix has no buttons: a reminder's buttons become reactions the bot puts on its own message;
# the person taps one (adds the same reaction) and the bot runs the button's command.
REACTIONS = {"Snooze 10 min": "💤", "1 hour": "🕐", "Tomorrow": "📅", "Stop follow-ups": "🔕"}
_SPARE = ("1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣")


def reaction_keys(buttons: list[Any]) -> list[tuple[str, Any]]:
    """(emoji, button) for each button, the same every time for the same buttons."""
    spare = iter(_SPARE)
    return [(REACTIONS.get(b.label) or next(spare), b) for b in buttons[: len(_SPARE)]]


def reaction_hint(buttons: list[Any]) -> str:
    """The line under a reminder that says what each reaction does."""
    keys = reaction_keys(buttons)
    if not keys:
        return ""
    return "\nReact with " + ", ".join(f"{emoji} {b.label.lower()}" for emoji, b in keys) + "."


async def send_first(
    outbox: Outbox,
    on_gone: Callable[[str], Awaitable[None]],
    chat_id: str,
    text: str,
    *,
    key: str,
    thread_id: str | None = None,
    buttons: list[Any] | None = None,
) -> str:
    """A message the assistant starts (a reminder) in the room it was set in. The transaction
    id comes from the occurrence id, so sending it again after a crash returns the event the
    homeserver already has instead of posting a second one (Synapse keeps transaction ids of
    a device for 30 minutes). Its buttons become the bot's own reactions on it (idempotent the
    same way), which the person taps to snooze (MatrixChannel._on_reaction)."""
    from core.reminders.dispatch import ChatGone

    if chat_id not in outbox.client.rooms:  # left, kicked, or the room is gone
        await on_gone(chat_id)
        raise ChatGone(chat_id)
    digest = hashlib.sha256(key.encode()).hexdigest()[:40]
    buttons = buttons or []
    try:
        event_id = await outbox.send(
            chat_id, message_content(text + reaction_hint(buttons)), tx_id=f"reminder-{digest}"
        )
    except MatrixSendError as exc:
        if "M_FORBIDDEN" in str(exc):
            await on_gone(chat_id)
            raise ChatGone(chat_id) from exc
        raise
    for i, (emoji, _) in enumerate(reaction_keys(buttons)):
        annotation = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": emoji}}
        try:
            await outbox.send(chat_id, annotation, "m.reaction", tx_id=f"reaction-{digest}-{i}")
        except MatrixSendError as exc:  # the hint line still says what to do
            log.warning("matrix.reaction_failed", room_id=chat_id, error=str(exc)[:200])
    return event_id
