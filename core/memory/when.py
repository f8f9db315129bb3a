"""The time a question names: "last week", "in May", "two months ago", "before I moved".

Recall uses it to prefer turns from then. A general date parser finds dates in any text but not
the span a question means ("in May" is the whole month, "last week" is Monday to Monday), so
this is a short list of English patterns over `dateutil`'s calendar arithmetic. Anything it does
not recognise is simply not a time question: recall then ranks as usual.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dateutil.relativedelta import relativedelta

MONTHS = {
    name: i
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ],
        start=1,
    )
    for name in names
}
NUMBERS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "a couple of": 2,
    "a couple": 2,
    "couple of": 2,
    "two": 2,
    "a few": 3,
    "few": 3,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
}
SEASONS = {"spring": 3, "summer": 6, "autumn": 9, "fall": 9, "winter": 12}
UNITS = {"day": "days", "week": "weeks", "month": "months", "year": "years"}
RECENT_WORDS = re.compile(
    r"\b(now|currently|current|these days|nowadays|at the moment|anymore|any more|still|latest|most recent)\b",
    re.I,
)

_MONTH = "|".join(sorted(MONTHS, key=len, reverse=True))
_NUM = "|".join(sorted((re.escape(n) for n in NUMBERS), key=len, reverse=True))
_YEAR = r"(?:19|20)\d\d"


@dataclass(frozen=True)
class When:
    """A span of time a question points at; `start`/`end` may be open. `anchor` is an event
    ("I moved") whose date the caller must look up before the span is known."""

    start: datetime | None
    end: datetime | None
    phrase: str
    anchor: str | None = None
    direction: str = ""  # "before" | "after" for anchors and open spans

    def contains(self, ts: datetime) -> bool:
        return (self.start is None or ts >= self.start) and (self.end is None or ts < self.end)


def _day(dt: datetime) -> datetime:
    return dt.replace(hour=0, minute=0, second=0, microsecond=0)


def _month_span(year: int, month: int) -> tuple[datetime, datetime]:
    start = datetime(year, month, 1, tzinfo=UTC)
    return start, start + relativedelta(months=1)


def _past_month(now: datetime, month: int, *, strictly: bool = False) -> int:
    """The year of the most recent `month` (this year's if it has begun, else last year's)."""
    if month < now.month or (month == now.month and not strictly):
        return now.year
    return now.year - 1


def _number(text: str) -> int:
    text = text.lower().strip()
    return int(text) if text.isdigit() else NUMBERS[text]


def _season(now: datetime, season: str, year: int | None, last: bool) -> tuple[datetime, datetime]:
    month = SEASONS[season]
    if year is None:
        start = datetime(now.year, month, 1, tzinfo=UTC)
        if start > now or (last and start + relativedelta(months=3) > now):
            start -= relativedelta(years=1)
    else:
        start = datetime(year, month, 1, tzinfo=UTC)
    return start, start + relativedelta(months=3)


def _relative(now: datetime, m: re.Match[str]) -> tuple[datetime, datetime] | None:
    word = m.group(0).lower()
    today = _day(now)
    if word == "today" or word == "earlier today":
        return today, today + timedelta(days=1)
    if word == "yesterday":
        return today - timedelta(days=1), today
    if word == "the day before yesterday":
        return today - timedelta(days=2), today - timedelta(days=1)
    return None


def _spans(now: datetime):
    """(pattern, function(match) -> (start, end)) pairs, most specific first."""
    today = _day(now)
    week_start = today - timedelta(days=today.weekday())

    def period(which: str, unit: str) -> tuple[datetime, datetime]:
        if unit == "week":
            start = week_start
            step = relativedelta(weeks=1)
        elif unit == "weekend":
            start = week_start + timedelta(days=5)
            if which == "last" or start > now:
                start -= timedelta(days=7)
            return start, start + timedelta(days=2)
        elif unit == "month":
            start = today.replace(day=1)
            step = relativedelta(months=1)
        else:
            start = today.replace(month=1, day=1)
            step = relativedelta(years=1)
        if which == "last":
            return start - step, start
        return start, start + step

    def ago(m: re.Match[str]) -> tuple[datetime, datetime]:
        n = _number(m.group("n"))
        unit = m.group("unit").lower().rstrip("s")
        centre = now - relativedelta(**{UNITS[unit]: n})
        half = {"day": timedelta(days=1), "week": timedelta(days=4), "month": timedelta(days=16)}.get(
            unit, timedelta(days=183)
        )
        return centre - half, centre + half

    def past(m: re.Match[str]) -> tuple[datetime, datetime]:
        n = _number(m.group("n"))
        unit = m.group("unit").lower().rstrip("s")
        return now - relativedelta(**{UNITS[unit]: n}), now

    def month_year(m: re.Match[str]) -> tuple[datetime, datetime]:
        month = MONTHS[m.group("month").lower()]
        year = int(m.group("year")) if m.group("year") else _past_month(now, month)
        start, end = _month_span(year, month)
        part = (m.group("part") or "").lower()
        if part == "early":
            end = start + timedelta(days=10)
        elif part in ("mid", "middle of"):
            start, end = start + timedelta(days=10), start + timedelta(days=20)
        elif part in ("late", "end of"):
            start = start + timedelta(days=20)
        return start, end

    def last_month_name(m: re.Match[str]) -> tuple[datetime, datetime]:
        month = MONTHS[m.group("month").lower()]
        return _month_span(_past_month(now, month, strictly=True), month)

    def day_month(m: re.Match[str]) -> tuple[datetime, datetime]:
        month = MONTHS[m.group("month").lower()]
        year = int(m.group("year")) if m.group("year") else _past_month(now, month)
        start = datetime(year, month, int(m.group("day")), tzinfo=UTC)
        return start, start + timedelta(days=1)

    def iso_day(m: re.Match[str]) -> tuple[datetime, datetime]:
        start = datetime(int(m.group("y")), int(m.group("m")), int(m.group("d")), tzinfo=UTC)
        return start, start + timedelta(days=1)

    def year(m: re.Match[str]) -> tuple[datetime, datetime]:
        y = int(m.group("year"))
        return datetime(y, 1, 1, tzinfo=UTC), datetime(y + 1, 1, 1, tzinfo=UTC)

    def season(m: re.Match[str]) -> tuple[datetime, datetime]:
        groups = m.groupdict()
        y = int(groups["year"]) if groups.get("year") else None
        return _season(now, groups["season"].lower(), y, (groups.get("which") or "").lower() == "last")

    def recently(_: re.Match[str]) -> tuple[datetime, datetime]:
        return now - timedelta(days=30), now

    return [
        (r"\b(?P<y>\d{4})-(?P<m>\d\d)-(?P<d>\d\d)\b", iso_day),
        (
            rf"\b(?:on\s+)?(?:the\s+)?(?P<day>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<month>{_MONTH})\b"
            rf"(?:\s*,?\s*(?P<year>{_YEAR}))?",
            day_month,
        ),
        (
            rf"\b(?:on\s+)?(?P<month>{_MONTH})\s+(?P<day>\d{{1,2}})(?:st|nd|rd|th)?\b(?:\s*,?\s*(?P<year>{_YEAR}))?",
            day_month,
        ),
        (r"\b(?:the\s+)?(?:day\s+before\s+yesterday|earlier\s+today|yesterday|today)\b", None),
        (rf"\b(?P<n>\d+|{_NUM})\s+(?P<unit>day|week|month|year)s?\s+ago\b", ago),
        (
            rf"\b(?:in\s+|over\s+|during\s+)?the\s+(?:last|past)\s+(?P<n>\d+|{_NUM})\s+(?P<unit>day|week|month|year)s?\b",
            past,
        ),
        (rf"\blast\s+(?P<month>{_MONTH})\b", last_month_name),
        (
            r"\b(?P<which>last|this)\s+(?P<season>spring|summer|autumn|fall|winter)\b",
            season,
        ),
        (
            rf"\b(?:in\s+|during\s+)?(?:the\s+)?(?P<season>spring|summer|autumn|fall|winter)\s+(?:of\s+)?(?P<year>{_YEAR})\b",
            season,
        ),
        (r"\b(?P<which>last|this)\s+(?P<unit>weekend|week|month|year)\b", "period"),
        (
            rf"\b(?:in|during|back\s+in|around|from)\s+(?:(?P<part>early|mid|late|the\s+middle\s+of|the\s+end\s+of)[\s-]+)?"
            rf"(?P<month>{_MONTH})\b(?:\s*,?\s*(?P<year>{_YEAR}))?",
            month_year,
        ),
        (
            rf"\b(?P<part>early|mid|late)[\s-]+(?P<month>{_MONTH})\b(?:\s*,?\s*(?P<year>{_YEAR}))?",
            month_year,
        ),
        (rf"\b(?:in|during|back\s+in)\s+(?P<year>{_YEAR})\b", year),
        (r"\b(?:recently|lately|the\s+other\s+day)\b", recently),
    ], period


def _find_span(text: str, now: datetime) -> tuple[tuple[datetime, datetime], re.Match[str]] | None:
    patterns, period = _spans(now)
    for pattern, fn in patterns:
        m = re.search(pattern, text, re.I)
        if not m:
            continue
        if fn is None:
            span = _relative(now, m)
        elif fn == "period":
            span = period(m.group("which").lower(), m.group("unit").lower())
        else:
            try:
                span = fn(m)
            except (ValueError, KeyError):  # "31 February", an odd number word: not a date
                continue
        if span:
            return span, m
    return None


_OPEN = re.compile(r"\b(?P<dir>before|after|since|until|till|prior\s+to)\s+(?P<rest>[^?.!,;]+)", re.I)
_DIRECTION = {"before": "before", "until": "before", "till": "before", "prior to": "before"}


def parse_when(text: str, now: datetime | None = None) -> When | None:
    """The span of time `text` asks about, or None when it names no time."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    opened = _OPEN.search(text)
    if opened:
        direction = _DIRECTION.get(re.sub(r"\s+", " ", opened.group("dir").lower()), "after")
        rest = opened.group("rest").strip()
        found = None
        for prefix in ("", "in "):  # "since January" reads as "since (in) January"
            found = _find_span(prefix + rest, now)
            if found and found[1].start() == 0:
                break
            found = None
        if found:
            (start, end), m = found
            cut = m.end() - len(prefix)
            phrase = f"{opened.group('dir')} {rest[:cut]}".strip()
            if direction == "before":
                return When(None, start, phrase, direction="before")
            return When(
                end if opened.group("dir").lower() == "after" else start, None, phrase, direction="after"
            )
        anchor = rest.strip()
        if anchor and len(anchor.split()) <= 8:
            return When(None, None, opened.group(0).strip(), anchor=anchor, direction=direction)
    found = _find_span(text, now)
    if found:
        (start, end), m = found
        return When(start, min(end, now + timedelta(days=1)) if start < now else end, m.group(0).strip())
    return None


def around_anchor(when: When, anchor_ts: datetime) -> When:
    """The span of an anchored question once the event's date is known."""
    if when.direction == "before":
        return When(None, anchor_ts, when.phrase, when.anchor, when.direction)
    return When(anchor_ts, None, when.phrase, when.anchor, when.direction)


def asks_for_now(text: str) -> bool:
    """Whether a question is about the present state of something that may have changed."""
    return bool(RECENT_WORDS.search(text))


def without(text: str, phrase: str) -> str:
    """The question with its time phrase taken out (so "May" is not searched as a word)."""
    return re.sub(re.escape(phrase), " ", text, flags=re.I).strip() if phrase else text


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAY = re.compile(rf"\b(?P<which>last|this|next)\s+(?P<day>{'|'.join(WEEKDAYS)})\b", re.I)
_NEXT = re.compile(r"\b(?P<tomorrow>tomorrow)\b|\bnext\s+(?P<unit>week|month|year|weekend)\b", re.I)
# patterns of _spans that are relative to the moment said (dates and "recently" are not resolved)
_RELATIVE = re.compile(r"yesterday|today|\bago\b|\blast\b|\bpast\b|\bthis\b", re.I)
_COMING = re.compile(r"tomorrow|\bnext\b", re.I)


def _label(start: datetime, end: datetime) -> str:
    days = (end - start).days
    if days <= 1:
        return f"{start:%A} {start.day} {start:%B %Y}"
    if days <= 3 and start.weekday() == 5:
        return f"the weekend of {start.day} {start:%B %Y}"
    if days <= 7:
        return f"the week of {start.day} {start:%B %Y}"
    if days <= 31 and start.day == 1:
        return f"{start:%B %Y}"
    if days >= 365 and start.month == 1 and start.day == 1:
        return f"{start.year}"
    return f"{start.day} {start:%B %Y} to {(end - timedelta(days=1)).day} {(end - timedelta(days=1)):%B %Y}"


def resolve_relative(text: str, said_at: datetime) -> list[tuple[str, str]]:
    """The relative time phrases of something said at `said_at`, each with the date it meant:
    ("last Friday", "Friday 5 January 2024"). An import writes them beside the text, so that a
    turn read months later still says when its "yesterday" was."""
    if not _RELATIVE.search(text) and not _COMING.search(text):
        return []  # most messages: one scan instead of every pattern
    said_at = said_at.astimezone(UTC)
    day = _day(said_at)
    found: list[tuple[int, str, tuple[datetime, datetime]]] = []
    for m in _WEEKDAY.finditer(text):
        target = WEEKDAYS.index(m.group("day").lower())
        which = m.group("which").lower()
        ahead = (target - day.weekday()) % 7
        if which == "next":
            start = day + timedelta(days=ahead or 7)
        elif which == "this":
            start = day + timedelta(days=ahead)
        else:  # "last Friday": the most recent one before today
            start = day - timedelta(days=(day.weekday() - target) % 7 or 7)
        found.append((m.start(), m.group(0), (start, start + timedelta(days=1))))
    for m in _NEXT.finditer(text):
        if m.group("tomorrow"):
            span = (day + timedelta(days=1), day + timedelta(days=2))
        else:
            unit = m.group("unit").lower()
            if unit in ("week", "weekend"):
                monday = day - timedelta(days=day.weekday()) + timedelta(days=7)
                span = (
                    (monday + timedelta(days=5), monday + timedelta(days=7))
                    if unit == "weekend"
                    else (monday, monday + timedelta(days=7))
                )
            elif unit == "month":
                start = day.replace(day=1) + relativedelta(months=1)
                span = (start, start + relativedelta(months=1))
            else:
                span = (datetime(day.year + 1, 1, 1, tzinfo=UTC), datetime(day.year + 2, 1, 1, tzinfo=UTC))
        found.append((m.start(), m.group(0), span))
    taken = [(start, start + len(phrase)) for start, phrase, _ in found]
    rest = text
    while True:
        hit = _find_span(rest, said_at)
        if hit is None:
            break
        span, m = hit
        if _RELATIVE.search(m.group(0)) and not any(a < m.end() and m.start() < b for a, b in taken):
            found.append((m.start(), m.group(0).strip(), span))
        rest = rest[: m.start()] + " " * (m.end() - m.start()) + rest[m.end() :]
    return [(phrase, _label(*span)) for _, phrase, span in sorted(found)]


def with_dates(text: str, said_at: datetime) -> str:
    """`text` with its relative time phrases' dates written after it, as an import stores it."""
    resolved = resolve_relative(text, said_at)
    if not resolved:
        return text
    return f"{text} [{'; '.join(f'{phrase}: {when}' for phrase, when in resolved)}]"
