"""Open loops: a dated thing a person said is coming up for them ("my JLPT exam is on Sunday",
"I fly to Lisbon next Friday", "dentist appointment on the 12th at 3pm", "the report is due
Thursday"), found in their own words so a follow-up can check in on it.

Deterministic, like reminder parsing (core/reminders/parse.py, whose date patterns it reuses):
the same sentence at the same moment always gives the same loop, and what it gives is built
from the sentence, never invented. It errs towards silence: a sentence that is a question, a
hypothetical ("if I get the interview…"), negated or past ("my exam was on Sunday"), or about
someone else ("my sister's exam", "Tom flies to Lisbon") is no loop. An unasked message on a
misread sentence costs more than a missed check-in. bench/followup_eval.py measures both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from core.reminders.parse import day_named

# kind -> whether the check-in comes before the event (to prepare) or after it (how did it go)
BEFORE, AFTER = "before", "after"
KINDS: dict[str, str] = {
    "exam": BEFORE,
    "interview": BEFORE,
    "presentation": BEFORE,
    "deadline": BEFORE,
    "trip": BEFORE,
    "appointment": AFTER,
    "event": AFTER,
}

_NOUNS: list[tuple[str, str]] = [
    ("exam", r"exams?|tests?|finals|midterms?|quiz|viva|resit|retake|jlpt|ielts|toefl|gre|gmat|bar exam"),
    ("interview", r"interviews?"),
    ("presentation", r"presentation|talk|pitch|demo|keynote|thesis defen[cs]e"),
    (
        "appointment",
        r"(?:(?:dentist|dental|doctor'?s?|gp|vet|physio|hospital|eye|hair|hairdresser)\s+)?appointments?|"
        r"check-?up|dentist|surgery|operation|scan|(?:physio(?:therapy)?|therapy)\s+session|vet visit",
    ),
    (
        "event",
        r"race|marathon|half marathon|audition|recital|concert|gig|competition|tournament|match|wedding",
    ),
]
_NOUN = re.compile(rf"\b(?P<noun>{'|'.join(f'(?P<{k}>{v})' for k, v in _NOUNS)})\b", re.I)
# "I fly to Lisbon", "flight to Tokyo", "trip to Rome", "leaving for Paris", "off to Oslo"
_TRIP = re.compile(
    r"\b(?:i'?m\s+|i\s+am\s+|we'?re\s+|i\s+|we\s+)?(?:fly(?:ing)?|flight|trip|travel(?:l?ing)?|"
    r"leav(?:e|ing)|head(?:ing)?|off|going|drive|driving|move|moving)\s+(?:back\s+)?(?:to|for)\s+"
    r"(?P<place>[A-Z][\w'-]+(?:\s+[A-Z][\w'-]+)?)"
)
# "the report is due Thursday", "my essay is due on the 12th", "deadline for the grant"
_DUE = re.compile(
    r"\b(?:(?P<det>my|our|the)\s+)?(?P<subj>(?:[\w-]+\s+){0,2}?[\w-]+)\s+(?:is|are|'s)\s+due\b", re.I
)
_DEADLINE = re.compile(
    r"\b(?:deadline\s+for\s+(?:(?P<det>my|our|the)\s+)?(?P<subj>(?:[\w-]+\s+){0,2}?[\w-]+?)"
    r"(?=\s+(?:is|are|on|by|this|next|in)\b|\s*[,.!]|\s*$)"
    r"|(?:(?P<det2>my|our|the)\s+)?(?P<subj2>(?:[\w-]+\s+){0,2}?[\w-]+)\s+deadline"
    r"|(?:submit|hand\s+in|turn\s+in)\s+(?:(?P<det3>my|our|the)\s+)?(?P<subj3>(?:[\w-]+\s+){0,2}?[\w-]+?)\s+by)\b",
    re.I,
)

_HYPOTHETICAL = re.compile(
    r"\b(?:if|whether|maybe|perhaps|might|may be|could|would|should|unless|in case|i wish|hope to|"
    r"hoping to|someday|one day|thinking (?:of|about)|considering|imagine|suppose|what if|probably)\b",
    re.I,
)
_NEGATED = re.compile(
    r"\b(?:no|not|don'?t|doesn'?t|didn'?t|isn'?t|aren'?t|won'?t|never|cancel(?:l?ed)?|postponed|"
    r"called off|skip(?:ping)?)\b",
    re.I,
)
_PAST = re.compile(
    r"\b(?:was|were|had|went|flew|did|took|passed|failed|finished|yesterday|ago|last|earlier|"
    r"already|got back|came back)\b",
    re.I,
)
_OTHERS = re.compile(
    r"\b(?:he|she|they|his|her|their|him|them|you|your)\b|\b(?!(?:it|that|what|there|here|let|he|she|who|doctor|dentist|vet)'s)\w+'s\s+"
    r"(?:[\w-]+\s+){0,2}(?=\w)",
    re.I,
)
_RELATIVES = (
    r"sister|brother|mum|mom|mother|dad|father|wife|husband|partner|boyfriend|girlfriend|friend|"
    r"son|daughter|boss|colleague|kid|kids|child|children|flatmate|roommate|cousin|aunt|uncle|"
    r"grandma|grandpa|neighbou?r|team"
)
_OTHER_SUBJECT = re.compile(rf"^\s*(?:my|our)\s+(?:{_RELATIVES})\b", re.I)
_NAME_SUBJECT = re.compile(
    r"^\s*(?!(?:I|I'm|I've|I'll|My|Our|The|We|We're|On|Next|This|Tomorrow|Today|Tonight|So|And|But|"
    r"Also|Just|Oh|Well|Ok|Okay|Yes|Yeah|Hey|Hi|Fyi|Btw|Reminder|Note|Finally|Anyway)\b)"
    r"[A-Z][a-z]+\s+(?:and\s+[A-Z][a-z]+\s+)?(?:has|have|is|are|flies|fly|leaves|goes|'s)\b"
)
_FIRST_PERSON = re.compile(r"\b(?:i|i'm|im|i've|i'll|i'd|my|me|we|we're|our|us)\b", re.I)
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")
# lower-case three-letter weekdays are words too ("the sun", "I sat"): only dates when capitalised
_SHORT_DAYS = re.compile(r"\b(?:sun|sat|mon|wed|thu|fri|tue)\b")
_IN_DAYS = re.compile(
    r"\bin\s+(?P<n>\d+|two|three|four|five|six|seven|ten|a)\s+(?P<unit>days?|weeks?)\b", re.I
)
_WORDS = {"a": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "ten": 10}
_NOT_MODIFIER = {
    "have",
    "has",
    "got",
    "is",
    "on",
    "at",
    "for",
    "to",
    "and",
    "i",
    "i've",
    "i'm",
    "we",
    "with",
    "of",
    "big",
    "next",
    "this",
}


@dataclass(frozen=True)
class OpenLoop:
    """A dated thing coming up for the speaker. `subject` names it the way they did ("JLPT
    exam", "dentist appointment", "Lisbon" for a trip); `mine` says "my"/"your" fits it."""

    kind: str
    subject: str
    day: date
    mine: bool = True

    @property
    def timing(self) -> str:
        return KINDS[self.kind]

    def key(self) -> str:
        """The same event however it is phrased: kind, subject words, day."""
        words = re.sub(r"[^a-z0-9]+", " ", self.subject.lower()).split()
        return f"{self.kind}|{' '.join(words)}|{self.day.isoformat()}"


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCES.split(text) if s.strip()]


def _date_in(sentence: str, said: datetime) -> date | None:
    """The day the sentence names, resolved against when it was said (local time)."""
    masked = _SHORT_DAYS.sub("_", sentence)
    masked = re.sub(r"\b(?:by|due|before)\s+(?=the\s+\d)", "on ", masked, flags=re.I)
    if m := _IN_DAYS.search(masked):
        n = int(m.group("n")) if m.group("n").isdigit() else _WORDS[m.group("n").lower()]
        return said.date() + timedelta(days=n * (7 if m.group("unit").lower().startswith("week") else 1))
    if re.search(r"\btonight\b", masked, re.I):
        return said.date()
    return day_named(masked, said)


_DETERMINERS = {"my": True, "our": True, "a": True, "an": True, "the": False}


def _subject(sentence: str, m: re.Match[str]) -> tuple[str, bool]:
    """ "JLPT exam" from "my JLPT exam": the words between the nearest determiner and the noun
    (three at most); without a determiner, the noun alone. "the …" is not "your …"."""
    words = sentence[: m.start()].split()[-4:]
    dets = [i for i, w in enumerate(words) if w.lower() in _DETERMINERS]
    mods: list[str] = []
    mine = True
    if dets:
        mods = words[dets[-1] + 1 :]
        mine = _DETERMINERS[words[dets[-1]].lower()]
    mods = [w for w in mods if w.lower() not in _NOT_MODIFIER and re.fullmatch(r"[\w-]+", w)]
    noun = m.group("noun")
    if noun.lower() in ("jlpt", "ielts", "toefl", "gre", "gmat"):
        noun = noun.upper() + " exam"
    return (" ".join([*mods, noun]), mine)


def _loop_in(sentence: str, said: datetime) -> OpenLoop | None:
    if sentence.rstrip().endswith("?"):
        return None
    if _HYPOTHETICAL.search(sentence) or _NEGATED.search(sentence) or _PAST.search(sentence):
        return None
    if _OTHER_SUBJECT.search(sentence) or _NAME_SUBJECT.search(sentence):
        return None
    found: tuple[str, str, bool, int] | None = None  # kind, subject, mine, where
    if m := _TRIP.search(sentence):
        if not _FIRST_PERSON.search(sentence):
            return None
        found = ("trip", m.group("place"), True, m.start())
    elif m := (_DUE.search(sentence) or _DEADLINE.search(sentence)):
        groups = m.groupdict()
        subj = next((groups[k] for k in ("subj", "subj2", "subj3") if groups.get(k)), "")
        det = next((groups[k] for k in ("det", "det2", "det3") if groups.get(k)), None)
        subj = re.sub(r"^(?:i|we|to|have|need|must)\s+", "", subj.strip(), flags=re.I)
        if not subj or subj.lower() in ("it", "this", "that", "everything", "something", "rent"):
            return None
        found = ("deadline", subj, (det or "my").lower() != "the", m.start())
    elif m := _NOUN.search(sentence):
        kind = next(k for k, _ in _NOUNS if m.group(k))
        subj, mine = _subject(sentence, m)
        found = (kind, subj, mine, m.start())
    if found is None:
        return None
    kind, subj, mine, where = found
    if _OTHERS.search(sentence[: where + len(subj) + 1]):  # "my sister's exam", "his interview"
        return None
    day = _date_in(sentence, said)
    if day is None or day < said.date():
        return None
    return OpenLoop(kind, subj, day, mine)


def find(text: str, said: datetime) -> list[OpenLoop]:
    """Every open loop in a message, `said` being the local time it was sent (aware)."""
    loops: list[OpenLoop] = []
    for sentence in sentences(text):
        loop = _loop_in(sentence, said)
        if loop is not None and loop.key() not in {x.key() for x in loops}:
            loops.append(loop)
    return loops
