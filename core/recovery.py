"""Answering what was left unanswered, while the process runs, and sharing one data dir.

Why: the inbox (core/inbox.py) used to be read once, at start. A message whose answer failed
because the connection was lost (Telegram's API unreachable, a Slack socket or a Matrix sync
down) stayed unanswered until the next restart, and a second chat process on the same data
dir took the first one's messages for leftovers of a crash. Here one loop per process:

- keeps this run's row in the inbox's `runs` fresh (a heartbeat): others know it is alive;
- claims what dead runs left (a killed process on this machine is seen at once, by its pid;
  one elsewhere once its row is DEAD_AFTER_SECONDS old) and answers it with the late note;
- answers, late, this run's messages that nothing is answering and that arrived over
  `recovery_after_seconds` ago (the reply failed: the connection dropped) — once the channel
  is back, since an answer that fails is released and tried again at the next sweep;
- when other live runs share the data dir: answers this run's messages that waited for an
  earlier message of the same chat (maybe another process's) to be answered.

The channel does the answering (its own locks, rendering, delivery): it registers a function
that takes an Incoming and answers it the way it answers a new message. `admit` is the gate
`Assistant.handle` asks before answering anything: answered already, held by a live run,
or (shared) not next in its chat means not now.

Why this mechanism for several processes (README, "Several chat processes"): the inbox is
already the one place every message is recorded before it is acknowledged, so ownership
(the `run` column, taken over by compare-and-set), liveness (the `runs` rows) and arrival
order (the rowid) live in the same SQLite file and change in the same transactions: no second
system whose view could disagree with the inbox's, and nothing to route at the load balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog

from core.inbox import Entry, Key, State, key_of
from core.messages import Incoming

if TYPE_CHECKING:
    from core.assistant import Assistant

log = structlog.get_logger(__name__)

Answer = Callable[[Incoming], Awaitable[None] | None]

HEARTBEAT_SECONDS = 2.0
TICK_SECONDS = 1.0  # alone on the data dir: leftovers of dead runs are looked for this often
SHARED_TICK_SECONDS = 0.2  # sharing it: a message that waited for another process's goes this soon
REDISPATCH_SECONDS = 5.0  # a message handed to its channel is not handed again sooner (shared)
SHARED_REFRESH_SECONDS = 5.0
NEXT_UP_ALONE_SECONDS = 2.0  # sharing it: caches of other processes' writes are dropped this often


class Recovery:
    def __init__(self, assistant: Assistant) -> None:
        self.assistant = assistant
        self.inbox = assistant.inbox
        self.settings = assistant.settings
        self._channels: dict[str, Answer] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._handed: dict[Key, float] = {}  # key -> when it was handed to its channel
        self._shared = False
        self._shared_at = 0.0

    # -- the gate -------------------------------------------------------------------------------

    @property
    def shared(self) -> bool:
        """Whether other live chat processes use this data dir (looked up at most once a second)."""
        now = time.monotonic()
        if now - self._shared_at > 1.0:
            self._shared, self._shared_at = self.inbox.others_alive(), now
        return self._shared

    def admit(self, msg: Incoming, busy: frozenset[Key] = frozenset()) -> tuple[Entry, bool] | None:
        """Record `msg` and say whether this process answers it now, and whether it is late.
        None: answered already, being answered by another live process, or an earlier message
        of its chat is still unanswered and not being answered here (`busy`: this process's
        replies in progress, which its locks keep in order): the loop hands it over later.
        Runs in a thread (SQLite, and LanceDB when catching up)."""
        key = key_of(msg)
        entry = self.inbox.receive(msg)
        if entry.state is State.ANSWERED:
            log.info("duplicate message ignored", platform=msg.platform)
            return None
        late = entry.late
        if entry.run != self.inbox.run:
            if entry.run in self.inbox.live_runs():
                log.info("message held by another process", platform=msg.platform)
                return None
            if not self.inbox.claim(key, entry.run):
                return None  # another process claimed it first
            late = True
        if late:  # what the run that left it wrote (its reply may be finished) must be visible
            self.assistant.store.catch_up()
        earlier = self.inbox.open_before(key)
        if any(run != self.inbox.run or k not in busy for k, run in earlier):
            log.info("message waits for an earlier one in its chat", platform=msg.platform)
            return None
        if self.shared and self.inbox.answered_before(key) != self.inbox.run:
            # the chat's last answer came from another process: read what it wrote
            self.assistant.store.catch_up()
            self.assistant.forget_recent(msg.platform, msg.chat_id)
        return entry, late

    # -- channels -------------------------------------------------------------------------------

    @property
    def channels(self) -> frozenset[str]:
        """The platforms whose left-unanswered messages this loop answers now."""
        return frozenset(self._channels)

    def register(self, platform: str, answer: Answer) -> None:
        """A channel is up: `answer(msg)` answers a message like a new one (it may only schedule
        the answer). Starts the loop with the first channel."""
        self._channels[platform] = answer
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="inbox-recovery")
        self.nudge()

    def unregister(self, platform: str) -> None:
        self._channels.pop(platform, None)
        if not self._channels and self._task is not None:
            self._task.cancel()
            self._task = None

    def nudge(self) -> None:
        """Look now (a channel reconnected), not at the next tick."""
        if self._wake is not None:
            self._wake.set()

    # -- the loop -------------------------------------------------------------------------------

    async def _run(self) -> None:
        beat = sweep = refresh = 0.0
        while True:
            try:
                now = time.monotonic()
                if now - beat >= HEARTBEAT_SECONDS:
                    await asyncio.to_thread(self.inbox.heartbeat)
                    beat = now
                shared = await asyncio.to_thread(lambda: self.shared)
                due = now - sweep >= self.settings.recovery_interval_seconds
                if due:
                    sweep = now
                    # the journal of a chat process that stopped: its turns go to LanceDB now
                    if await asyncio.to_thread(self.assistant.store.adopt_journal):
                        log.info("took over the turn journal of a stopped chat process")
                if shared and now - refresh >= SHARED_REFRESH_SECONDS:
                    refresh = now
                    await asyncio.to_thread(self.assistant.store.catch_up)
                    self.assistant.forget_recent()  # windows may miss other processes' turns or deletions
                for platform, answer in list(self._channels.items()):
                    await self._look(platform, answer, stalled=due, shared=shared)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next tick tries again; the inbox keeps everything
                log.warning("inbox recovery failed", error=type(exc).__name__, detail=str(exc))
            assert self._wake is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), SHARED_TICK_SECONDS if self._shared else TICK_SECONDS
                )
            self._wake.clear()

    async def _look(self, platform: str, answer: Answer, *, stalled: bool, shared: bool) -> None:
        now = time.monotonic()
        self._handed = {k: t for k, t in self._handed.items() if now - t < self._hold()}
        busy = self.assistant._active | self.assistant._reading | set(self._handed)
        orphans = await asyncio.to_thread(self.inbox.unanswered, platform)  # claimed: now ours
        if orphans:  # a dead process's journal first: its finished replies are shown, not redone
            await asyncio.to_thread(self.assistant.store.adopt_journal)
        found: list[tuple[Entry, str]] = [(e, "taken over") for e in orphans]
        if stalled:
            after = self.settings.recovery_after_seconds
            found += [
                (e, "stalled") for e in await asyncio.to_thread(self.inbox.stalled, platform, after, busy)
            ]
        # messages that waited for an earlier one of their chat (sharing the data dir; or
        # before the process that held the earlier one died): alone, only those not picked up
        # by their channel within a moment
        waited = 0.0 if shared else NEXT_UP_ALONE_SECONDS
        found += [(e, "next") for e in await asyncio.to_thread(self.inbox.next_up, platform, busy, waited)]
        seen: set[Key] = set()
        for entry, why in found:
            msg = entry.message
            assert msg is not None
            key = key_of(msg)
            if key in seen or (why != "taken over" and key in busy):
                continue
            seen.add(key)
            if why != "next" and self.assistant._too_old(entry):
                await self.assistant.handle(msg)  # recorded, not answered: hours late helps nobody
                continue
            if why != "next":
                log.info("answering a message left unanswered", platform=platform, reason=why)
            self._handed[key] = time.monotonic()
            try:
                result: Any = answer(msg)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                log.warning(
                    "handing a message to its channel failed", platform=platform, error=type(exc).__name__
                )

    def _hold(self) -> float:
        """How long a message handed to its channel counts as being answered."""
        return min(REDISPATCH_SECONDS, self.settings.recovery_after_seconds)


def register(assistant: object, platform: str, answer: Answer) -> None:
    """For channels: register with the assistant's recovery loop, if it has one (test doubles
    of the assistant do not)."""
    recovery = getattr(assistant, "recovery", None)
    if isinstance(recovery, Recovery):
        recovery.register(platform, answer)


def unregister(assistant: object, platform: str) -> None:
    recovery = getattr(assistant, "recovery", None)
    if isinstance(recovery, Recovery):
        recovery.unregister(platform)


def nudge(assistant: object) -> None:
    recovery = getattr(assistant, "recovery", None)
    if isinstance(recovery, Recovery):
        recovery.nudge()
