"""Reminder requests in plain English: "remind me to call mum at 6", "every weekday at 8 ask me
how the run went", "on the 3rd of every month pay rent".

Deterministic on purpose: the same words at the same moment always give the same time, and the
person sees that time before it matters (the confirmation names it). A short list of patterns
over `dateutil`'s calendar arithmetic and `rrule`, with wall-clock times in the person's own
zone (`zoneinfo`): "every day at 8" stays 08:00 across a DST change. What it does not
understand is refused with an example, never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta
from dateutil.rrule import DAILY, MONTHLY, WEEKLY, YEARLY, rrulestr, weekday
from dateutil.rrule import rrule as make_rrule

from core.memory.when import MONTHS, NUMBERS

WEEKDAYS = {
    "monday": 0,
    "mon": 0,
    "tuesday": 1,
    "tue": 1,
    "tues": 1,
    "wednesday": 2,
    "wed": 2,
    "thursday": 3,
    "thu": 3,
    "thur": 3,
    "thurs": 3,
    "friday": 4,
    "fri": 4,
    "saturday": 5,
    "sat": 5,
    "sunday": 6,
    "sun": 6,
}
# a part of the day without a clock time
PARTS = {
    "morning": time(9),
    "afternoon": time(15),
    "evening": time(18),
    "night": time(20),
    "tonight": time(20),
}
DEFAULT_TIME = time(9)  # a day without a time: in the morning
# days known by name, on the same date every year (month, day)
NAMED_DAYS = {
    "christmas eve": (12, 24),
    "christmas day": (12, 25),
    "christmas": (12, 25),
    "boxing day": (12, 26),
    "new years eve": (12, 31),
    "new years day": (1, 1),
    "valentines day": (2, 14),
    "halloween": (10, 31),
}
_NAMED = r"christmas\s+eve|christmas\s+day|christmas|boxing\s+day|new\s+year'?s\s+(?:eve|day)|valentine'?s\s+day|halloween"
HELP = (
    "I couldn't tell when. Try “in 20 minutes”, “tomorrow at 9”, “on Fri 5 Dec at 18:00”, "
    "“every weekday at 8” or “on the 3rd of every month”."
)

_WD = "|".join(sorted(WEEKDAYS, key=len, reverse=True))
_MON = "|".join(sorted(MONTHS, key=len, reverse=True))
_NUM = "|".join(sorted((re.escape(n) for n in NUMBERS), key=len, reverse=True))
_ORD = r"(?P<{0}>[0-3]?\d)(?:st|nd|rd|th)?"
_TIME = (
    r"(?:(?:at|@)\s+)?(?:"
    r"(?P<h>[01]?\d|2[0-3])(?:[:.](?P<mi>[0-5]\d))?\s*(?P<ap>a\.?m\.?|p\.?m\.?)"
    r"|(?P<h24>[01]?\d|2[0-3])[:.](?P<mi24>[0-5]\d)"
    r"|(?:at|@)\s+(?P<hb>[01]?\d|2[0-3])(?:\s*o'?clock)?"
    r"|(?P<word>noon|midday|midnight)"
    r")"
)
_UNIT = r"(?P<unit>minutes?|mins?|hours?|hrs?|days?|weeks?|months?)"


class ParseError(ValueError):
    """The words name no time we understand, or one in the past; the message says what works."""


@dataclass(frozen=True)
class Parsed:
    """What to remind about and when: `first` is the first occurrence in the person's zone;
    `rule` an RFC 5545 RRULE (local wall-clock times) for recurring ones."""

    what: str
    first: datetime
    tz: str
    rule: str | None = None
    every: str = ""  # "every Monday at 09:00", for confirmations and lists


def zone(name: str) -> ZoneInfo:
    """A time zone by IANA name ("Europe/Berlin"); ParseError for an unknown one."""
    try:
        return ZoneInfo(name.strip())
    except (KeyError, ValueError, OSError) as exc:
        raise ParseError(f"I don't know the time zone “{name}”. Use a name like Europe/Berlin.") from exc


def localize(naive: datetime, tz: ZoneInfo) -> datetime:
    """Wall-clock `naive` in `tz`; a time skipped by a DST change moves forward by the gap."""
    aware = naive.replace(tzinfo=tz)
    return aware.astimezone(UTC).astimezone(tz)


def occurrences_after(parsed_rule: str, dtstart: datetime, tz: ZoneInfo, after: datetime) -> datetime | None:
    """The first occurrence of a recurring reminder strictly after `after` (aware), in `tz`."""
    rule = rrulestr(parsed_rule, dtstart=dtstart.replace(tzinfo=None))
    # walk in local wall time; a local time is at most a day off UTC, so start a day early
    cursor = after.astimezone(tz).replace(tzinfo=None) - timedelta(days=1)
    nxt = rule.after(cursor, inc=True)
    while nxt is not None:
        local = localize(nxt, tz)
        if local > after:
            return local
        nxt = rule.after(nxt)
    return None


def _number(text: str) -> int:
    text = text.strip().lower()
    return int(text) if text.isdigit() else NUMBERS[text]


def _clock(m: re.Match[str], *, minutes_ambiguous: bool = False) -> tuple[int, int, bool]:
    """(hour, minute, ambiguous): "at 6" could be 06:00 or 18:00; with `minutes_ambiguous` (a
    one-off) so could "at 8:15" (but not "08:15" or "18:15")."""
    if m.group("word"):
        return (0 if m.group("word") == "midnight" else 12), 0, False
    if m.group("h") is not None:
        h, mi = int(m.group("h")), int(m.group("mi") or 0)
        if h > 12 or h == 0:
            raise ParseError(f"“{m.group(0).strip()}” isn't a time I can read.")
        pm = m.group("ap").startswith("p")
        return (h % 12) + (12 if pm else 0), mi, False
    if m.group("h24") is not None:
        raw = m.group("h24")
        h = int(raw)
        return h, int(m.group("mi24")), minutes_ambiguous and 1 <= h <= 11 and not raw.startswith("0")
    h = int(m.group("hb"))
    return h, 0, 1 <= h <= 11


class _Text:
    """The request with recognised parts cut out; what is left is what to remind about."""

    def __init__(self, text: str) -> None:
        self.text = f" {text} "

    def take(self, pattern: str) -> re.Match[str] | None:
        m = re.search(rf"(?<![\w:]){pattern}(?![\w:])", self.text, re.I)
        if m:
            self.text = self.text[: m.start()] + " " + self.text[m.end() :]
        return m

    def rest(self) -> str:
        words = re.sub(r"\s+", " ", self.text).strip(" ,.;:!")
        words = re.sub(r"^(?:please\s+)?remind\s+me\b\s*", "", words, flags=re.I)
        words = re.sub(r"^(?:(?:to|that|about|of|on|at|and)\s+)+", "", words, flags=re.I)
        words = re.sub(r"(?:\s+(?:on|at|to|and|by))+$", "", words, flags=re.I)
        return words.strip(" ,.;:!")


_MENTION = r"(?:<@\w+>|@\S+)?[\s,:]*"  # "@bot remind me …" in a group
_LEAD = re.compile(
    rf"^\s*{_MENTION}(?:/remind(?:@\S+)?|(?:please\s+|can you\s+|could you\s+)?remind\s+me)\b[\s,:]*", re.I
)


_NEXT = (
    rf"(?:to|that|about|in|at|on|every|each|tomorrow|tonight|today|next|this|the\s+day|daily|weekly|monthly"
    rf"|hourly|weekdays|weekends|noon|midnight|{_WD}|\d)\b"
)


def is_request(text: str) -> bool:
    """True for "remind me to …"-like messages (handled here rather than by the model);
    "remind me what my cat is called?" is a question for memory, not a reminder."""
    lead = rf"^\s*{_MENTION}(?:please\s+|can you\s+|could you\s+|hey,?\s+)?remind\s+me[\s,:]+{_NEXT}"
    return bool(re.match(lead, text, re.I))


def parse(text: str, now: datetime, tz_name: str) -> Parsed:
    """The reminder `text` asks for, as of `now` (aware), in the person's zone `tz_name`."""
    tz = zone(tz_name)
    local_now = now.astimezone(tz)
    body = _LEAD.sub("", text.strip(), count=1)
    t = _Text(body)

    recurring = _recurring(t, local_now, tz)
    if recurring is not None:
        first, rule, every = recurring
        return Parsed(_what(t), first, tz.key, rule, every)

    rel = t.take(
        rf"in\s+(?P<n>\d+|{_NUM}|half an?)\s+{_UNIT}(?:\s+and\s+(?P<n2>\d+|{_NUM})\s+(?P<unit2>minutes?|mins?))?"
    )
    if rel is None:
        rel = t.take(r"in\s+(?P<n>half)\s+an?\s+(?P<unit>hour)")
    if rel is not None:
        return Parsed(_what(t), _relative(rel, local_now), tz.key)

    tonight = t.take(r"tonight")
    day, roll = (local_now.date(), 0) if tonight else _day(t, local_now)
    clock = t.take(_TIME)
    part = t.take(r"(?:in\s+the\s+|this\s+|at\s+)?(?P<part>morning|afternoon|evening|night)")
    if tonight and part is None:
        part = re.match(r"(?P<part>night)", "night")
    if day is None and clock is None and part is None:
        raise ParseError(HELP)
    if clock is not None:
        hour, minute, ambiguous = _clock(clock, minutes_ambiguous=True)
        if ambiguous and part is not None:  # "tomorrow evening at 7"
            pm = part.group("part").lower() != "morning"
            hour, ambiguous = hour + (12 if pm else 0), False
    elif part is not None:
        hour, minute, ambiguous = PARTS[part.group("part").lower()].hour, 0, False
    else:
        hour, minute, ambiguous = DEFAULT_TIME.hour, DEFAULT_TIME.minute, False
    candidates = [(hour, minute)] + ([(hour + 12, minute)] if ambiguous else [])
    if day is None:  # a time alone: its next occurrence
        options = []
        for d in (local_now.date(), local_now.date() + timedelta(days=1)):
            for h, mi in candidates:
                when = localize(datetime.combine(d, time(h, mi)), tz)
                if when > local_now:
                    options.append(when)
        first = min(options)
    else:
        options = [localize(datetime.combine(day, time(h, mi)), tz) for h, mi in candidates]
        future = [o for o in options if o > local_now]
        if not future:
            if not roll:
                raise ParseError(f"{_format(options[-1])} has already passed. When should I remind you?")
            later = day + timedelta(days=roll)
            future = [localize(datetime.combine(later, time(h, mi)), tz) for h, mi in candidates]
        first = min(future)
    return Parsed(_what(t), first, tz.key)


_LEFT_REPEAT = re.compile(
    r"^(?:every|each)\b|\b(?:every|each)\s+(?:first|second|third|fourth|last|other)\b", re.I
)


def _what(t: _Text) -> str:
    what = t.rest()
    if not what:
        raise ParseError("What should I remind you about? For example: remind me to call mum at 6.")
    if _LEFT_REPEAT.search(what):  # a repeat we did not understand must not become a one-off
        raise ParseError(
            "I can't repeat reminders that way yet. Try “every Monday at 9”, “every weekday at 8” or "
            "“on the 3rd of every month”."
        )
    return what


def _relative(m: re.Match[str], now: datetime) -> datetime:
    raw = m.group("n").lower()
    unit = m.group("unit").lower()
    if raw.startswith("half"):
        amount: float = 0.5
    else:
        amount = _number(raw)
    if unit.startswith(("min",)):
        delta: timedelta | relativedelta = timedelta(minutes=amount)
    elif unit.startswith(("hour", "hr")):
        delta = timedelta(hours=amount)
    elif unit.startswith("day"):
        delta = timedelta(days=amount)
    elif unit.startswith("week"):
        delta = timedelta(weeks=amount)
    else:
        delta = relativedelta(months=int(amount))
    if m.groupdict().get("n2"):
        delta += timedelta(minutes=_number(m.group("n2")))
    if isinstance(delta, relativedelta):  # calendar months: same wall time
        return now + delta
    # elapsed time, not wall time: "in 2 hours" across a DST change is two real hours
    return (now.astimezone(UTC) + delta).astimezone(now.tzinfo).replace(microsecond=0)


def _day(t: _Text, now: datetime) -> tuple[date | None, int]:
    """The day named, and how many days later it recurs if its time already passed today
    (0: a calendar date, which must not move; 7: "friday" said on a Friday afternoon)."""
    today = now.date()
    if m := t.take(r"(?:on\s+)?(?P<y>20\d\d)-(?P<m>[01]\d)-(?P<d>[0-3]\d)"):
        return _date(int(m.group("y")), int(m.group("m")), int(m.group("d"))), 0
    wd = rf"(?:(?:{_WD})\.?,?\s+)?"
    if m := t.take(
        rf"(?:on\s+)?{wd}(?:the\s+)?{_ORD.format('d')}\s+(?:of\s+)?(?P<mon>{_MON})\.?(?:\s+(?P<y>20\d\d))?"
    ):
        return _next_date(now, int(m.group("d")), MONTHS[m.group("mon").lower()], m.group("y")), 0
    if m := t.take(rf"(?:on\s+)?{wd}(?P<mon>{_MON})\.?\s+{_ORD.format('d')}(?:,?\s+(?P<y>20\d\d))?"):
        return _next_date(now, int(m.group("d")), MONTHS[m.group("mon").lower()], m.group("y")), 0
    if m := t.take(rf"(?:on\s+)?(?P<named>{_NAMED})"):
        month, d = NAMED_DAYS[re.sub(r"[\s']+", " ", m.group("named").lower()).replace(" s ", "s ")]
        return _next_date(now, d, month, None), 0
    if t.take(r"(?:the\s+)?day\s+after\s+tomorrow"):
        return today + timedelta(days=2), 0
    if m := t.take(r"tomorrow(?:\s+(?P<part>morning|afternoon|evening|night))?"):
        day = today + timedelta(days=1)
        if m.group("part"):
            t.text += f" in the {m.group('part')} "
        return day, 0
    if t.take(r"today"):
        return today, 1
    if m := t.take(rf"(?:on\s+)?(?P<which>next|this|coming)?\s*(?P<wd>{_WD})\b\.?"):
        wd = WEEKDAYS[m.group("wd").lower()]
        ahead = (wd - today.weekday()) % 7
        if m.group("which") and m.group("which").lower() == "next" and ahead == 0:
            ahead = 7
        return today + timedelta(days=ahead), 7 if ahead == 0 else 0
    if m := t.take(rf"on\s+the\s+{_ORD.format('d')}"):
        d = int(m.group("d"))
        candidate = today.replace(day=1)
        for _ in range(13):
            try:
                day = candidate.replace(day=d)
            except ValueError:
                day = None
            if day is not None and day >= today:
                return day, 0 if day != today else 31
            candidate = candidate + relativedelta(months=1)
        raise ParseError(f"There is no day {d} in a month.")
    return None, 1


def day_named(text: str, now: datetime) -> date | None:
    """The calendar day a sentence names ("on Sunday", "the 12th", "Dec 20", "tomorrow"), as of
    `now` (local), or None; a clock time in it is not read as a day. For follow-ups
    (core/reminders/openloops.py), which need the day of an event, not a reminder."""
    t = _Text(text)
    t.take(_TIME)
    try:
        day, _roll = _day(t, now)
    except ParseError:
        return None
    return day


def _date(y: int, m: int, d: int) -> date:
    try:
        return date(y, m, d)
    except ValueError as exc:
        raise ParseError(f"{y}-{m:02d}-{d:02d} isn't a date.") from exc


def _next_date(now: datetime, d: int, m: int, year: str | None) -> date:
    if year:
        return _date(int(year), m, d)
    day = _date(now.year, m, d) if not (m == 2 and d == 29) else None
    if day is None or day < now.date():
        day = _date(now.year + 1, m, d)
    return day


_EVERY_WD = rf"(?P<wds>(?:{_WD})s?(?:\s*(?:,|and|&)\s*(?:{_WD})s?)*)"


def _recurring(t: _Text, now: datetime, tz: ZoneInfo) -> tuple[datetime, str, str] | None:
    """(first occurrence, RRULE, "every …") for a recurring request, else None."""
    freq = None
    kwargs: dict = {}
    label = ""
    monthly = rf"(?:on\s+)?the\s+{_ORD.format('d')}\s+of\s+(?:every|each)\s+month"
    if m := t.take(rf"{monthly}|(?:every|each)\s+month\s+on\s+the\s+{_ORD.format('d2')}"):
        d = int(m.group("d") or m.group("d2"))
        freq, kwargs, label = MONTHLY, {"bymonthday": d}, f"on the {_ordinal(d)} of every month"
    elif m := t.take(
        rf"(?:(?:on\s+)?(?:every|each|the)\s+)(?P<nth>first|1st|second|2nd|third|3rd|fourth|4th|last)\s+"
        rf"(?P<wd>{_WD})\.?\s+of\s+(?:every|each|the)\s+month"
    ):
        nth = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4}.get(
            m.group("nth").lower(), -1
        )
        wd = WEEKDAYS[m.group("wd").lower()]
        freq, kwargs = MONTHLY, {"byweekday": (weekday(wd)(nth),)}
        day_name = list(WEEKDAYS)[list(WEEKDAYS.values()).index(wd)].capitalize()
        label = f"every {m.group('nth').lower()} {day_name} of the month"
    elif m := t.take(r"(?:every|each)\s+weekday|on\s+weekdays|weekdays"):
        freq, kwargs, label = WEEKLY, {"byweekday": (0, 1, 2, 3, 4)}, "every weekday"
    elif m := t.take(r"(?:every|each)\s+weekend|on\s+weekends|weekends"):
        freq, kwargs, label = WEEKLY, {"byweekday": (5, 6)}, "every weekend day"
    elif m := t.take(
        rf"(?:every|each)\s+(?P<other>other\s+)?{_EVERY_WD}|on\s+{_EVERY_WD.replace('wds', 'wds2')}s\b"
    ):
        raw = m.group("wds") or m.group("wds2")
        days = sorted(
            {
                WEEKDAYS[w.lower().rstrip("s") if w.lower().rstrip("s") in WEEKDAYS else w.lower()]
                for w in re.findall(_WD + r"s?", raw, re.I)
            }
        )
        names = [list(WEEKDAYS)[list(WEEKDAYS.values()).index(d)].capitalize() for d in days]
        freq, kwargs = WEEKLY, {"byweekday": tuple(days)}
        if m.groupdict().get("other"):
            kwargs["interval"] = 2
        label = ("every other " if kwargs.get("interval") else "every ") + " and ".join(names)
    elif m := t.take(r"(?:every|each)\s+(?P<part>morning|afternoon|evening|night)"):
        freq, label = DAILY, f"every {m.group('part').lower()}"
        t.text += f" in the {m.group('part')} "
    elif m := t.take(
        r"(?:every|each)\s+(?P<n>\d+|other|two|three|four|five|six)?\s*(?P<unit>day|week|month|year)s?|(?P<ly>daily|weekly|monthly|yearly|annually)"
    ):
        unit = (
            m.group("unit")
            or {"daily": "day", "weekly": "week", "monthly": "month"}.get(
                (m.group("ly") or "").lower(), "year"
            )
        ).lower()
        freq = {"day": DAILY, "week": WEEKLY, "month": MONTHLY, "year": YEARLY}[unit]
        n = m.group("n")
        interval = 2 if n == "other" else (_number(n) if n else 1)
        if interval > 1:
            kwargs["interval"] = interval
        label = f"every {unit}" if interval == 1 else f"every {interval} {unit}s"
    elif m := t.take(
        r"(?:every|each)\s+(?P<n>\d+|two|three|four|five|six|ten|twelve)?\s*(?P<unit>hour|minute)s?|hourly"
    ):
        n = m.groupdict().get("n")
        interval = _number(n) if n else 1
        unit = (m.groupdict().get("unit") or "hour").lower()
        if unit == "minute" and interval < 5:
            raise ParseError("The shortest repeat I do is every 5 minutes.")
        step = timedelta(hours=interval) if unit == "hour" else timedelta(minutes=interval)
        first = (now + step).replace(second=0, microsecond=0)
        rule = f"FREQ={'HOURLY' if unit == 'hour' else 'MINUTELY'};INTERVAL={interval}"
        return first, rule, (f"every {unit}" if interval == 1 else f"every {interval} {unit}s")
    if freq is None:
        return None
    # the time of day, and for a weekly/monthly/yearly rule without days, the anchor day
    day, _roll = _day(t, now)
    clock = t.take(_TIME)
    part = None if clock else t.take(r"(?:in\s+the\s+|at\s+)?(?P<part>morning|afternoon|evening|night)")
    if clock is not None:
        hour, minute, ambiguous = _clock(clock)
        if ambiguous and hour < 7:  # "every day at 6" means the evening only for small hours
            hour += 12
    elif part is not None:
        hour, minute = PARTS[part.group("part").lower()].hour, 0
    else:
        hour, minute = DEFAULT_TIME.hour, DEFAULT_TIME.minute
    anchor = day or now.date()
    if freq == WEEKLY and "byweekday" in kwargs and day is None:  # count "every other" from the next one
        anchor = next(
            anchor + timedelta(days=i)
            for i in range(7)
            if (anchor + timedelta(days=i)).weekday() in kwargs["byweekday"]
        )
    if freq == WEEKLY and "byweekday" not in kwargs:
        kwargs["byweekday"] = (anchor.weekday(),)
    if freq == MONTHLY and "bymonthday" not in kwargs and "byweekday" not in kwargs:
        kwargs["bymonthday"] = anchor.day
    if freq == YEARLY:
        kwargs.update(bymonth=anchor.month, bymonthday=anchor.day)
    kwargs.update(byhour=hour, byminute=minute, bysecond=0)
    start = datetime.combine(anchor, time(0, 0))
    rule_obj = make_rrule(freq, dtstart=start, **kwargs)
    rule = str(rule_obj).split("\n")[-1].removeprefix("RRULE:")
    first = occurrences_after(rule, start, tz, now)
    if first is None:
        raise ParseError(HELP)
    return first, rule, f"{label} at {hour:02d}:{minute:02d}"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _format(when: datetime) -> str:
    return f"{when:%a} {when.day} {when:%b} at {when:%H:%M}"


def describe(when: datetime, now: datetime) -> str:
    """ "Fri 5 Dec at 18:00" (the year only when it is not this one)."""
    text = _format(when)
    if when.year != now.astimezone(when.tzinfo).year:
        text = text.replace(f" {when:%b}", f" {when:%b} {when.year}")
    return text


def confirmation(p: Parsed, now: datetime) -> str:
    """What the person reads back, with the exact local time of the (first) reminder."""
    if p.rule:
        return f"I'll remind you {p.every} ({p.tz}), first on {describe(p.first, now)}: {p.what}"
    return f"I'll remind you on {describe(p.first, now)} ({p.tz}): {p.what}"
