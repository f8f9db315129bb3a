"""Follow-ups: one check-in on a dated thing a person said is coming up, if they opted in.

Consolidation reads a person's new turns (core/memory/consolidate.py, in a worker); the worker
then hands the same turns to `FollowUps.propose`, which finds open loops (core/reminders/openloops.py)
and stores one follow-up per event as a reminder of kind "followup" in the reminder store, so
delivery, exactly-once, erasure and account linking are the reminders' own. The bot's
dispatcher sends it into the direct chat the person said it in.

When (the person's zone, inside waking hours):
- before an exam, interview, presentation, deadline or trip: 19:00 the evening before
  ("Your JLPT exam is on Sunday 6 Dec — want to go over anything tonight?");
- after an appointment or an event (a race, a concert): 18:00 the day after ("How did …go?").
A check-in whose time has passed when the loop is found (said the evening before) is not made.

Limits, so a follow-up stays welcome: only for people who sent `/followups on`; only from
direct chats, never groups; only from what they said in the last two days; at most
`MAX_PENDING` pending per person; at most one
unasked message per person per local day, enforced when sending (`gate`): a second one due the
same day moves to the next day at the same time, or is dropped when that would be on or after
a "before" event's day, or more than two days after an "after" event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import structlog

from core.memory.records import PRIVATE, Turn
from core.reminders.openloops import AFTER, BEFORE, OpenLoop, find
from core.reminders.parse import localize, zone
from core.reminders.store import FOLLOWUP, Reminder, ReminderStore

if TYPE_CHECKING:
    from core.reminders.dispatch import Clock

log = structlog.get_logger(__name__)

EVENING_BEFORE = time(19)
DAY_AFTER = time(18)
FRESH = timedelta(days=2)  # older statements (an imported history) propose nothing
AFTER_GRACE_DAYS = 2  # "how did it go" still makes sense this many days after the event
MAX_PENDING = 10  # pending follow-ups per person: a busy week is not a flood

_TEMPLATES = {
    "exam": "{Your} {subject} is on {day} — good luck! Want to go over anything tonight?",
    "interview": "{Your} {subject} is on {day} — want to run through a few questions tonight?",
    "presentation": "{Your} {subject} is on {day} — want to rehearse it once tonight?",
    "deadline": "{Your} {subject} is due on {day} — how is it coming along?",
    "trip": "You're off to {subject} on {day} — anything left to pack or sort out?",
    "appointment": "How did {your} {subject} on {day} go?",
    "event": "How did {your} {subject} on {day} go?",
}


def _day_name(day: date) -> str:
    return f"{day:%A} {day.day} {day:%b}"


def text_for(loop: OpenLoop) -> str:
    """The check-in, from a template naming the event and its day (nothing invented)."""
    your = "your" if loop.mine else "the"
    return _TEMPLATES[loop.kind].format(
        Your=your.capitalize(), your=your, subject=loop.subject, day=_day_name(loop.day)
    )


def check_in_at(loop: OpenLoop, tz: ZoneInfo) -> datetime:
    """The evening before (to prepare) or the day after (how did it go), local wall time."""
    if loop.timing == BEFORE:
        return localize(datetime.combine(loop.day - timedelta(days=1), EVENING_BEFORE), tz)
    return localize(datetime.combine(loop.day + timedelta(days=1), DAY_AFTER), tz)


def still_fits(timing: str, event_day: date, when: datetime) -> bool:
    """Whether a check-in at `when` (local) still makes sense for its event."""
    if timing == BEFORE:
        return when.date() < event_day
    return event_day < when.date() <= event_day + timedelta(days=AFTER_GRACE_DAYS)


def timing_of(r: Reminder) -> str:
    kind = (r.event_key or "").split("|", 1)[0]
    return AFTER if kind in ("appointment", "event") else BEFORE


@dataclass(frozen=True)
class Gate:
    """What the dispatcher does with a due follow-up: send it, move it, or drop it."""

    action: str  # "send" | "move" | "drop"
    until: datetime | None = None


def gate(store: ReminderStore, r: Reminder, now: datetime) -> Gate:
    """The daily cap and the event's own clock, checked just before sending."""
    assert r.next_due is not None
    if r.chat_kind != "direct":
        return Gate("drop")
    tz = ZoneInfo(r.tz)
    due = r.next_due.astimezone(tz)
    event_day = date.fromisoformat(r.event_day) if r.event_day else due.date()
    timing = timing_of(r)
    if not still_fits(timing, event_day, now.astimezone(tz)):
        return Gate("drop")  # late (the bot was down): "good luck tonight" after the exam is wrong
    today = now.astimezone(tz).date()
    start = localize(datetime.combine(today, time(0)), tz)
    end = localize(datetime.combine(today + timedelta(days=1), time(0)), tz)
    if store.followups_sent(r.person_id, start, end) == 0:
        return Gate("send")
    later = localize(datetime.combine(today + timedelta(days=1), due.time()), tz)
    if not still_fits(timing, event_day, later):
        return Gate("drop")
    return Gate("move", later)


class FollowUps:
    """Proposes follow-ups from a person's new turns; core only, called by a worker."""

    def __init__(self, reminders: ReminderStore, clock: Clock, default_tz: str = "UTC") -> None:
        self.reminders = reminders
        self.clock = clock
        self.default_tz = default_tz

    def propose(
        self, person_id: str, tz_name: str, turns: Iterable[Turn], has_bot_chat: Callable[[str, str], bool]
    ) -> list[Reminder]:
        """Store a follow-up for each new open loop in these turns; returns those added.
        `has_bot_chat(platform, chat_id)` says the chat is a live direct chat with the bot (not
        an imported one): follow-ups are sent there."""
        now = self.clock.now()
        try:
            tz = zone(tz_name or self.default_tz)
        except ValueError:
            tz = zone(self.default_tz)
        added: list[Reminder] = []
        pending = sum(r.is_followup for r in self.reminders.active_of(person_id))
        for turn in turns:
            # only direct chats the bot answered in (`has_bot_chat`, asked in `_one`): an import has none
            if turn.role != "user" or turn.visibility != PRIVATE:
                continue
            said = self.clock.at(turn.ts)
            if now - said > FRESH:
                continue
            for loop in find(turn.text, said.astimezone(tz)):
                if pending + len(added) >= MAX_PENDING:
                    break
                reminder = self._one(person_id, tz, turn, loop, now, has_bot_chat)
                if reminder is not None:
                    added.append(reminder)
        if added:
            log.info("follow-ups proposed", person=person_id, count=len(added))
        return added

    def _one(
        self,
        person_id: str,
        tz: ZoneInfo,
        turn: Turn,
        loop: OpenLoop,
        now: datetime,
        has_bot_chat: Callable[[str, str], bool],
    ) -> Reminder | None:
        key = loop.key()
        when = check_in_at(loop, tz)
        if when <= now or not still_fits(loop.timing, loop.day, when):
            return None
        if self.reminders.has_event(person_id, key):  # the same event said again
            return None
        if not has_bot_chat(turn.platform, turn.chat_id):
            return None
        return self.reminders.add(
            person_id=person_id,
            platform=turn.platform,
            chat_id=turn.chat_id,
            chat_kind="direct",
            setter=f"followup:{turn.platform}",
            what=text_for(loop),
            tz=tz.key,
            first=when,
            now=now,
            kind=FOLLOWUP,
            source=turn.id,
            event_key=key,
            event_day=loop.day.isoformat(),
        )
