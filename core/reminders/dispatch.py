"""Delivery: the process that holds the chat connections sends each due occurrence once.

Why here and not in a Celery worker: sending needs the platform's token and the chat's state
(Matrix room keys, who blocked the bot), which by design never leave the chat process
(workers/embedded.py gives its worker no tokens). And a Celery ETA task on Redis sits in a
worker's memory and is redelivered to another worker when it outlives the visibility timeout,
a known source of reminders that fire twice. The schedule lives in the store instead, so a
restart loses nothing: the dispatcher wakes at the next due time (a few milliseconds late),
delivers what fell due while the process was down with a "(late: …)" note, and moves on.

Exactly once per occurrence, across a SIGKILL at any point:
  claim (committed) -> send with the occurrence id as idempotency key -> record (committed).
Killed before the send: the next run finds the claim of a dead run and sends. Killed after the
send, before the record: the next run asks the platform whether the occurrence is there
(`Sender.find`: Slack message metadata; Matrix dedups a repeated transaction id itself) and
only records it. Telegram has neither, so a kill in the milliseconds between Telegram
accepting the message and the record sends it once more (one duplicate, never a loss).
One dispatcher per data dir holds `<data_dir>/reminders.lock`; the kernel drops the lock when
its process dies, which is how the next one knows a claim's owner is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

import structlog

from core.messages import Button
from core.reminders.parse import occurrences_after
from core.reminders.store import Claim, Reminder, ReminderStore

log = structlog.get_logger(__name__)

IDLE_CHECK_SECONDS = 30.0  # a reminder added by another process is seen at least this often
RETRY_SECONDS = (2, 5, 15, 60, 300)  # a platform error: try again, never drop
SNOOZES = (("Snooze 10 min", 10), ("1 hour", 60), ("Tomorrow", 24 * 60))
FOLLOWUP_FOOTER = "\n(A follow-up I offered: /followups off stops them.)"


class ChatGone(Exception):
    """The chat refuses the bot (blocked, kicked, deleted): the channel marked it inactive."""


class Sender(Protocol):
    async def __call__(
        self, chat_id: str, text: str, *, key: str, thread_id: str | None, buttons: list[Button]
    ) -> str:
        """Send `text` first (no message to reply to); returns the platform's message id.
        `key` is the occurrence id: a platform with idempotent sends uses it as the key.
        `buttons` (snooze) are shown where the platform has them, else ignored."""


Finder = Callable[[str, str], Awaitable[str | None]]  # (chat id, key) -> message id already sent


@dataclass
class Channel:
    send: Sender
    find: Finder | None = None  # None: the platform can't tell whether a key was sent
    # None: every chat of the platform; else only chats this says yes to (a console session
    # serves its own person; another person's console reminders wait for their session)
    serves: Callable[[str], bool] | None = None


class Clock:
    """Real time, or a test clock: at the real instant `anchor` it reads `origin`, and it runs
    `speed` times faster (tests and the soak bench). Every process given the same three values
    reads the same time, so a restart in a test keeps the clock."""

    def __init__(
        self, speed: float = 1.0, origin: datetime | None = None, anchor: datetime | None = None
    ) -> None:
        self.speed = speed
        self.real = speed == 1.0 and origin is None
        self.anchor = (anchor or datetime.now(UTC)).timestamp()
        self.origin = origin or datetime.fromtimestamp(self.anchor, UTC)

    def now(self) -> datetime:
        if self.real:
            return datetime.now(UTC)
        return self.origin + timedelta(seconds=(time.time() - self.anchor) * self.speed)

    def at(self, real: datetime) -> datetime:
        """What this clock read at the real instant `real` (a message's timestamp)."""
        if self.real:
            return real
        return self.origin + timedelta(seconds=(real.timestamp() - self.anchor) * self.speed)

    def seconds_until(self, when: datetime) -> float:
        return max(0.0, (when - self.now()).total_seconds() / self.speed)


def reminder_text(r: Reminder, due: datetime, now: datetime, late_after: float, up_since: datetime) -> str:
    """The message; late (due before this process began delivering, or long overdue) says so.
    A follow-up is its own sentence and never late (the gate drops one that no longer fits)."""
    if r.is_followup:
        return f"💬 {r.what}{FOLLOWUP_FOOTER}"
    text = f"⏰ Reminder: {r.what}"
    if due < up_since or (now - due).total_seconds() > late_after:
        local = due.astimezone(ZoneInfo(r.tz))
        when = (
            f"{local:%H:%M}"
            if local.date() == now.astimezone(local.tzinfo).date()
            else f"{local:%a} {local.day} {local:%b} {local:%H:%M}"
        )
        text += f" (late: I was offline at {when})"
    return text


def snooze_buttons(r: Reminder) -> list[Button]:
    """Snooze this reminder (by id, so the buttons work whatever /reminders numbers it); a
    follow-up offers to stop follow-ups instead."""
    if r.is_followup:
        return [Button("Stop follow-ups", "/followups off")]
    return [Button(label, f"/reminders snooze {r.id} {minutes}") for label, minutes in SNOOZES]


def next_after(r: Reminder, now: datetime) -> datetime | None:
    """The occurrence after this one (skipping any missed while the bot was down)."""
    if not r.rule or r.dtstart is None or r.next_due is None:
        return None
    tz = ZoneInfo(r.tz)
    start = datetime.fromisoformat(r.dtstart).replace(tzinfo=tz)
    return occurrences_after(r.rule, start, tz, max(now, r.next_due))


class Dispatcher:
    def __init__(
        self,
        store: ReminderStore,
        lock_path: Path,
        *,
        clock: Clock | None = None,
        late_after_seconds: float = 60.0,
        crash_point: str = "",
        idle_check_seconds: float = IDLE_CHECK_SECONDS,
    ) -> None:
        self.store = store
        self.idle_check = idle_check_seconds
        self.lock_path = lock_path
        self.clock = clock or Clock()
        self.late_after = late_after_seconds
        self.crash_point = crash_point  # tests: "before" / "after" the send, SIGKILL self
        self.run_id = uuid.uuid4().hex
        self.channels: dict[str, Channel] = {}
        self._wake = asyncio.Event()
        self.up_since = self.clock.now()
        self._lock_fd: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._failures: dict[str, tuple[int, float]] = {}  # reminder id -> (failures, retry at)
        self._unserved: set[str] = set()  # due, but for a chat no attached channel serves

    # -- channels come and go -------------------------------------------------------------------

    def attach(self, platform: str, channel: Channel) -> None:
        """A channel is connected: deliver its reminders (starts the loop on first use)."""
        self.channels[platform] = channel
        self._unserved.clear()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="reminders")
        self.wake()

    async def detach(self, platform: str) -> None:
        self.channels.pop(platform, None)
        self._unserved.clear()
        if not self.channels and self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self._release()

    def wake(self) -> None:
        """A reminder was added or cancelled: look at the schedule again now."""
        self._wake.set()

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        while not self._acquire():  # another process delivers for this data dir
            await asyncio.sleep(2.0)
        self.up_since = self.clock.now()
        log.info("reminder delivery started", platforms=sorted(self.channels))
        while True:
            self._wake.clear()
            try:
                await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reminder delivery failed; trying again")
                await asyncio.sleep(1.0)
            waiting = set(self._failures) | self._unserved
            nxt = await asyncio.to_thread(self.store.next_due, sorted(self.channels), waiting)
            wait = self.idle_check if nxt is None else min(self.idle_check, self.clock.seconds_until(nxt))
            retry = [at - time.monotonic() for _, at in self._failures.values()]
            if retry:
                wait = min(wait, max(0.0, min(retry)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def deliver_due(self) -> int:
        """Send every occurrence due now; returns how many went out."""
        now = self.clock.now()
        due = await asyncio.to_thread(self.store.due, now, sorted(self.channels))
        count = 0
        for r in due:
            failures = self._failures.get(r.id)
            if failures and failures[1] > time.monotonic():
                continue
            if await self._deliver(r):
                count += 1
        return count

    async def _deliver(self, r: Reminder) -> bool:
        channel = self.channels.get(r.platform)
        if channel is None:
            return False
        if channel.serves is not None and not channel.serves(r.chat_id):
            self._unserved.add(r.id)
            return False
        if r.is_followup and not await asyncio.to_thread(self._followup_may_go, r):
            return False
        claim = await asyncio.to_thread(self.store.claim, r, self.run_id)
        now = self.clock.now()
        if claim is None:  # sent by an earlier run that died before moving the reminder on
            await asyncio.to_thread(self.store.advance, r, next_after(r, now))
            return False
        if claim.attempts > 1 and channel.find is not None:
            found = await channel.find(r.chat_id, claim.occurrence_id)
            if found is not None:
                log.info("reminder already delivered before a restart", reminder=r.id)
                await asyncio.to_thread(self.store.sent, claim, found, next_after(r, now), now)
                return False
        self._crash("before")
        try:
            message_id = await channel.send(
                r.chat_id,
                reminder_text(r, claim.due, now, self.late_after, self.up_since),
                key=claim.occurrence_id,
                thread_id=r.thread_id,
                buttons=snooze_buttons(r),
            )
        except ChatGone:
            log.info("reminder chat is gone; reminder stopped", reminder=r.id, platform=r.platform)
            await asyncio.to_thread(self.store.undeliverable, r.id)
            return False
        except Exception as exc:
            n = self._failures.get(r.id, (0, 0.0))[0]
            delay = RETRY_SECONDS[min(n, len(RETRY_SECONDS) - 1)]
            self._failures[r.id] = (n + 1, time.monotonic() + delay)
            log.warning("reminder not sent; retrying", reminder=r.id, error=type(exc).__name__, retry_s=delay)
            return False
        self._crash("after")
        self._failures.pop(r.id, None)
        await asyncio.to_thread(self.store.sent, claim, str(message_id), next_after(r, now), now)
        lateness = (now - claim.due).total_seconds()
        log.info("reminder delivered", reminder=r.id, platform=r.platform, late_s=round(lateness, 3))
        return True

    def _followup_may_go(self, r: Reminder) -> bool:
        """The daily cap on unasked messages (core/reminders/followups.py): send, move or drop."""
        from core.reminders.followups import gate

        decision = gate(self.store, r, self.clock.now())
        if decision.action == "move" and decision.until is not None:
            self.store.move(r, decision.until)
            log.info("follow-up moved: one unasked message a day", reminder=r.id)
        elif decision.action == "drop":
            self.store.drop(r.id)
            log.info("follow-up dropped: no day left that fits its event", reminder=r.id)
        return decision.action == "send"

    def _crash(self, point: str) -> None:
        if self.crash_point == point:
            os.kill(os.getpid(), signal.SIGKILL)

    # -- one dispatcher per data dir ------------------------------------------------------------

    def _acquire(self) -> bool:
        if self._lock_fd is not None:
            return True
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


__all__ = ["Channel", "ChatGone", "Claim", "Clock", "Dispatcher", "Sender"]
