"""Reminders as the commands and the chat see them: set, list, cancel, snooze, recall, erase.

Reminders are not memories: they never enter a prompt or the model; "what did I ask you to
remind me about?" is answered from this store. In a group a reminder belongs to the chat it
was set in (it is delivered there), and only the account that set it may cancel it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog

from core.reminders.dispatch import Clock, Dispatcher
from core.reminders.parse import Parsed, ParseError, confirmation, describe, parse, zone
from core.reminders.store import Reminder, ReminderStore

log = structlog.get_logger(__name__)

DEFAULT_TZ = "UTC"
_RECALL = re.compile(
    r"\b(?:what|which)\b.*\bremind(?:er)?s?\b|\bmy reminders\b|\bremind(?:ed)? me (?:about|of|to)\b.*\?\s*$",
    re.I,
)


def is_recall_question(text: str) -> bool:
    """ "what did I ask you to remind me about?", "which reminders do I have?" """
    return (
        bool(_RECALL.search(text)) and "?" in text or text.strip().lower() in ("my reminders", "reminders?")
    )


class Reminders:
    def __init__(
        self,
        store: ReminderStore,
        lock_path: Path,
        *,
        clock: Clock | None = None,
        per_person: int = 50,
        late_after_seconds: float = 60.0,
        default_tz: str = DEFAULT_TZ,
        crash_point: str = "",
        poll_seconds: float = 30.0,
    ) -> None:
        self.store = store
        self.clock = clock or Clock()
        self.per_person = per_person
        self.default_tz = default_tz
        # platform -> async (account) -> IANA zone or None: the zone a platform's profile has
        self.zone_lookups: dict[str, Callable[[str], Awaitable[str | None]]] = {}
        self.dispatcher = Dispatcher(
            store,
            lock_path,
            clock=self.clock,
            late_after_seconds=late_after_seconds,
            crash_point=crash_point,
            idle_check_seconds=poll_seconds,
        )

    def close(self) -> None:
        self.store.close()

    async def platform_zone(self, platform: str, account: str) -> str | None:
        """The zone the person's platform profile names (Slack's users.info), if valid."""
        lookup = self.zone_lookups.get(platform)
        if lookup is None:
            return None
        try:
            name = await lookup(account)
            return zone(name).key if name else None
        except Exception as exc:  # a lookup is a convenience: the person can still set it
            log.info("platform time zone unavailable", platform=platform, error=type(exc).__name__)
            return None

    # -- setting ------------------------------------------------------------------------------

    async def set(
        self,
        text: str,
        *,
        person_id: str,
        tz: str | None,
        platform: str,
        chat_id: str,
        chat_kind: str,
        setter: str,
        thread_id: str | None = None,
    ) -> str:
        """Parse and store a request; the answer is the confirmation or what went wrong."""
        now = self.clock.now()
        try:
            parsed: Parsed = parse(text, now, tz or self.default_tz)
        except ParseError as exc:
            return str(exc)
        if await asyncio.to_thread(self.store.count_active, person_id) >= self.per_person:
            return (
                f"You already have {self.per_person} reminders, the most I keep per person. "
                "Cancel one first (/reminders)."
            )
        await asyncio.to_thread(
            self.store.add,
            person_id=person_id,
            platform=platform,
            chat_id=chat_id,
            chat_kind=chat_kind,
            thread_id=thread_id,
            setter=setter,
            what=parsed.what,
            tz=parsed.tz,
            first=parsed.first,
            rule=parsed.rule,
            every=parsed.every,
            now=now,
        )
        self.dispatcher.wake()
        log.info("reminder set", person=person_id, platform=platform, recurring=bool(parsed.rule))
        answer = confirmation(parsed, now)
        if not tz:
            answer += f"\n(I used {self.default_tz}. Tell me your time zone with /timezone Europe/Berlin.)"
        return answer

    # -- listing and cancelling ---------------------------------------------------------------

    def listed(self, person_id: str, platform: str, chat_id: str, chat_kind: str) -> list[Reminder]:
        """The numbered list /reminders shows and /reminders cancel N refers to: in a direct
        chat all of the person's, in a group the ones set in that group."""
        if chat_kind == "group":
            return self.store.active_in_chat(platform, chat_id)
        return self.store.active_of(person_id)

    def render(self, reminders: list[Reminder], chat_kind: str) -> str:
        if not reminders:
            return "No reminders set" + (" in this group." if chat_kind == "group" else ".")
        now = self.clock.now()
        lines = ["Your reminders:" if chat_kind == "direct" else "Reminders in this group:"]
        for i, r in enumerate(reminders, 1):
            assert r.next_due is not None
            when = describe(r.next_due.astimezone(ZoneInfo(r.tz)), now)
            repeat = f", {r.every}" if r.every else ""
            where = " (in a group)" if chat_kind == "direct" and r.chat_kind == "group" else ""
            what = f"(follow-up) {r.what}" if r.is_followup else r.what
            lines.append(f"{i}. {what} — {when}{repeat}{where}")
        lines.append("Cancel one with /reminders cancel <number>.")
        return "\n".join(lines)

    async def command(
        self, arg: str, *, person_id: str, platform: str, chat_id: str, chat_kind: str, sender_id: str
    ) -> str:
        """/reminders, /reminders cancel 2, /reminders snooze 2 10."""
        words = arg.split()
        if len(words) >= 2 and words[0].lower() == "snooze" and re.fullmatch(r"[0-9a-f]{12}", words[1]):
            # a snooze button on a delivered reminder names it by id
            minutes = int(words[2]) if len(words) > 2 and words[2].isdigit() else 10
            return await self.snooze(words[1], minutes, person_id=person_id, sender_id=sender_id)
        items = await asyncio.to_thread(self.listed, person_id, platform, chat_id, chat_kind)
        if not words:
            return self.render(items, chat_kind)
        action = words[0].lower()
        if action not in ("cancel", "delete", "remove", "snooze") or len(words) < 2 or not words[1].isdigit():
            return "Use /reminders, /reminders cancel <number> or /reminders snooze <number> [minutes]."
        n = int(words[1])
        if not 1 <= n <= len(items):
            return f"There is no reminder {n}. Send /reminders to see the numbers."
        chosen = items[n - 1]
        if chosen.person_id != person_id and chosen.setter != sender_id:
            return "Only the person who set that reminder can change it."
        if action == "snooze":
            minutes = int(words[2]) if len(words) > 2 and words[2].isdigit() else 10
            return await self.snooze(chosen.id, minutes)
        await asyncio.to_thread(self.store.cancel, chosen.id)
        self.dispatcher.wake()
        return f"Cancelled: {chosen.what}"

    async def snooze(
        self, reminder_id: str, minutes: int, person_id: str | None = None, sender_id: str | None = None
    ) -> str:
        old = await asyncio.to_thread(self.store.get, reminder_id)
        if old is None:
            return "That reminder is gone."
        if person_id is not None and old.person_id != person_id and old.setter != sender_id:
            return "Only the person who set that reminder can snooze it."
        until = self.clock.now() + timedelta(minutes=max(1, min(minutes, 7 * 24 * 60)))
        await asyncio.to_thread(self.store.snooze, reminder_id, until)
        self.dispatcher.wake()
        return (
            f"Snoozed: I'll remind you again on {describe(until.astimezone(zone(old.tz)), self.clock.now())}."
        )

    async def recall(self, person_id: str, platform: str, chat_id: str, chat_kind: str) -> str:
        items = await asyncio.to_thread(self.listed, person_id, platform, chat_id, chat_kind)
        if not items:
            return "You haven't asked me to remind you about anything right now."
        text = self.render(items, chat_kind)
        return text.replace("Your reminders:", "You asked me to remind you:", 1)

    def stop_followups(self, person_id: str) -> int:
        """/followups off: the pending ones go too."""
        count = self.store.cancel_followups(person_id)
        self.dispatcher.wake()
        return count

    def forget_person(self, person_id: str) -> int:
        count = self.store.forget_person(person_id)
        self.dispatcher.wake()
        return count


def utc_now() -> datetime:
    return datetime.now(UTC)


def open_reminders(settings, *, in_memory: bool = False) -> Reminders:  # noqa: ANN001 - core.config.Settings
    """The chat process's reminders: `<data_dir>/reminders.sqlite3` (in memory for tests that
    build an Assistant by hand), with the clock and limits from settings."""
    data = settings.data_dir
    clock = Clock(
        settings.reminder_clock_speed, settings.reminder_clock_origin, settings.reminder_clock_anchor
    )
    store = ReminderStore(None if in_memory else data / "reminders.sqlite3")
    return Reminders(
        store,
        data / "reminders.lock",
        clock=clock,
        per_person=settings.reminders_per_person,
        late_after_seconds=settings.reminder_late_seconds,
        default_tz=settings.default_timezone,
        crash_point=settings.reminder_crash_point,
        poll_seconds=settings.reminder_poll_seconds,
    )
