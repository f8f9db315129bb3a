"""Candidate memories from what a person said: the first half of consolidation.

An extractor reads a batch of one person's turns from ONE visibility scope and proposes
candidates; `core.memory.consolidate` decides what each candidate does to the stored memories
(add, update, supersede or nothing). Two extractors share the `Extractor` interface:

- `RuleExtractor`: deterministic patterns for first-person statements. It is the default for
  the bundled 135M model, which cannot produce reliable JSON, and it costs microseconds.
- `LLMExtractor`: asks a capable model for JSON, validates it, retries malformed output a few
  times and then drops the batch: a bad answer never crashes the task.

Aggregate signals (a question asked again and again, repeated requests for shorter answers)
need a person's history, not one batch: the helpers `is_question` and `asks_for_brevity` are
used by the consolidator with every extractor.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

import structlog
from pydantic import BaseModel, Field, ValidationError, field_validator

from core.memory.records import Turn

log = structlog.get_logger(__name__)

Op = Literal["set", "update", "end"]


@dataclass
class Candidate:
    """One thing the person said about themselves.

    `slot` names what the memory is about ("home", "employer", "taste:coffee",
    "project:atlas"). A slot holds one current value: a new value supersedes the old one.
    An empty slot means a free-standing memory, deduplicated by its text.
    `op` is "set" (the slot now holds this), "update" (add `detail` to the slot's memory:
    a project's constraint) or "end" (the slot no longer holds: a finished project).
    """

    kind: str
    text: str
    slot: str
    value: str
    turn_id: str
    ts: datetime
    confidence: float = 0.9
    op: Op = "set"
    detail: str = ""


class Extractor(Protocol):
    name: str

    def extract(self, turns: Sequence[Turn]) -> list[Candidate]:
        """Candidates from these turns (one person, one scope, oldest first)."""
        ...


# -- shared text helpers ------------------------------------------------------------------------

_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'"})
_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n+")
_STOP = re.compile(
    r"\s+(?:and|but|because|since|so|for|last|next|this|these|a few|two|three|several|now|"
    r"recently|yesterday|today|with|which|who|where|when|as|as of|in|by|from|until|after|before|lately|"
    r"anymore|though|although|while|if)\b.*$",
    re.IGNORECASE,
)
_HYPOTHETICAL = re.compile(
    r"\b(?:if|would|wish|maybe|might|imagine|suppose|pretend|should i|could i|thinking about|"
    r"considering|dream|someday|one day|hope to|plan to|planning to|want to|wanna)\b",
    re.IGNORECASE,
)
_REFERENTIAL = {"it", "that", "this", "them", "those", "these", "you", "your", "yours", "one", "so"}
_ARTICLES = re.compile(r"^(?:the|a|an|my|our|some)\s+", re.IGNORECASE)
_QUESTION_START = re.compile(
    r"^(?:how|what|why|when|where|which|who|whom|whose|is|are|can|could|should|would|do|does|did|"
    r"will|any (?:idea|tips))\b",
    re.IGNORECASE,
)
_BREVITY = re.compile(
    r"\b(?:shorter|too long|too wordy|tl;?dr|be brief|briefly|more concise|be concise|less verbose|"
    r"keep it short|keep it brief|in one sentence|in a sentence|short version|just the answer|"
    r"fewer words|shorten|cut it down|skip the (?:details|explanation))\b",
    re.IGNORECASE,
)
_CONCISE_WORDS = re.compile(r"\b(?:short|shorter|concise|brief|succinct|terse|to the point)\b", re.I)
_DETAILED_WORDS = re.compile(
    r"\b(?:detailed|longer|long|thorough|in-depth|in depth|comprehensive|elaborate)\b", re.I
)


def normalize(text: str) -> str:
    """Lowercased, apostrophes unified, single spaces: what two texts are compared by."""
    return re.sub(r"\s+", " ", text.translate(_APOSTROPHES)).strip().lower()


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text.translate(_APOSTROPHES)) if s.strip()]


def is_question(text: str) -> bool:
    """A question the person asked (not a rhetorical aside inside a statement)."""
    text = text.strip()
    if not text or len(text) > 400:
        return False
    return text.endswith("?") or bool(_QUESTION_START.match(text))


def asks_for_brevity(text: str) -> bool:
    """A request for a shorter answer: the evidence for an implicit 'prefers concise' preference."""
    return len(text) <= 300 and bool(_BREVITY.search(text.translate(_APOSTROPHES)))


def _clip(value: str, max_words: int = 5) -> str:
    value = _STOP.sub("", value.strip())
    value = re.split(r"[.,;:!?()\"]", value, maxsplit=1)[0].strip()
    words = value.split()
    return " ".join(words[:max_words]).strip(" '-")


def _key(value: str) -> str:
    return normalize(_ARTICLES.sub("", value))


def _place(value: str) -> str:
    value = _clip(value, 4)
    if value and value == value.lower():
        value = " ".join(w.capitalize() for w in value.split())
    return value


def _usable(value: str) -> bool:
    first = value.split()[0].lower() if value.split() else ""
    return bool(value) and first not in _REFERENTIAL


# -- the rule-based extractor -----------------------------------------------------------------------

_I = r"(?:^|\b)(?:i|i'm|i am|i've|i have)"
_JOB_SUFFIX = re.compile(
    r"(?:er|or|ist|ian|ant|ent|ect|eon|nurse|chef|lawyer|dentist|pilot|student|scientist)$", re.I
)
_NOT_JOBS = {
    "vegetarian",
    "vegan",
    "pescatarian",
    "parent",
    "introvert",
    "extrovert",
    "beginner",
    "member",
    "fan",
    "other",
    "number",
    "user",
    "customer",
    "owner",
    "mother",
    "father",
    "brother",
    "sister",
    "partner",
    "ancient",
    "different",
    "patient",
    "silent",
}


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str]
    build: Callable[[re.Match[str]], tuple[str, str, str, str, Op] | None]


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


def _home(m: re.Match[str]):
    v = _place(m.group("v"))
    return ("fact", f"Lives in {v}", "home", _key(v), "set") if _usable(v) else None


def _home_end(m: re.Match[str]):
    v = _place(m.group("v"))
    return ("fact", f"No longer lives in {v}", "home", _key(v), "end") if _usable(v) else None


def _hometown(m: re.Match[str]):
    v = _place(m.group("v"))
    return ("fact", f"Is originally from {v}", "hometown", _key(v), "set") if _usable(v) else None


def _employer(m: re.Match[str]):
    v = _clip(m.group("v"), 4)
    if not _usable(v) or v.lower().startswith(("home", "myself", "a ", "an ", "the moment")):
        return None
    return ("fact", f"Works at {v}", "employer", _key(v), "set")


def _job(m: re.Match[str]):
    v = _clip(m.group("v"), 4)
    last = v.split()[-1].lower() if v.split() else ""
    if not _usable(v) or last in _NOT_JOBS or not _JOB_SUFFIX.search(last):
        return None
    article = "an" if v[0].lower() in "aeiou" else "a"
    return ("fact", f"Works as {article} {v}", "job", _key(v), "set")


def _name(m: re.Match[str]):
    v = _clip(m.group("v"), 2)
    if not _usable(v):
        return None
    v = " ".join(w[:1].upper() + w[1:] for w in v.split())
    return ("fact", f"Is called {v}", "name", _key(v), "set")


def _diet(m: re.Match[str]):
    v = normalize(m.group("v"))
    return ("preference", f"Is {v}", "diet", v, "set")


def _allergy(m: re.Match[str]):
    v = _clip(m.group("v"), 3)
    return ("fact", f"Is allergic to {v}", f"allergy:{_key(v)}", _key(v), "set") if _usable(v) else None


def _likes(m: re.Match[str]):
    v = _clip(m.group("v"), 4)
    if not _usable(v):
        return None
    return ("preference", f"Likes {v}", f"taste:{_key(v)}", "likes", "set")


def _dislikes(m: re.Match[str]):
    v = _clip(m.group("v"), 4)
    if not _usable(v):
        return None
    return ("preference", f"Dislikes {v}", f"taste:{_key(v)}", "dislikes", "set")


def _style(m: re.Match[str]):
    phrase = m.group("v")
    if _CONCISE_WORDS.search(phrase):
        return ("preference", "Prefers concise answers", "style:length", "concise", "set")
    if _DETAILED_WORDS.search(phrase):
        return ("preference", "Prefers detailed answers", "style:length", "detailed", "set")
    return None


def _prefers(m: re.Match[str]):
    v = _clip(m.group("v"), 6)
    if not _usable(v) or re.search(r"\b(?:answers?|replies|responses|explanations?)\b", v, re.I):
        return None
    return ("preference", f"Prefers {v}", "", _key(v), "set")


_CALLED = re.compile(r"^(?P<desc>.*?)\s*(?:called|named)\s+(?P<name>.+)$", re.IGNORECASE)


def _project(m: re.Match[str]):
    raw = _clip(m.group("v"), 8)
    if not _usable(raw) or raw.lower().startswith(("on ", "out", "it ", "things", "stuff", "something")):
        return None
    called = _CALLED.match(raw)
    if called and called.group("name").strip():
        name = _clip(called.group("name"), 3)
        desc = called.group("desc").strip()
        text = f"Working on {name}" + (f", {desc}" if desc else "")
    else:
        name = raw
        text = f"Working on {raw}"
    return ("project", text, f"project:{_key(name)}", _key(name), "set")


def _project_done(m: re.Match[str]):
    v = _clip(m.group("v"), 4)
    if not _usable(v):
        return None
    return ("project", f"Finished {v}", f"project:{_key(v)}", _key(v), "end")


RULES: list[_Rule] = [
    _Rule(_rx(r"\bi (?:no longer|don't|do not) live in (?P<v>.+?)(?: anymore| any more|$)"), _home_end),
    _Rule(_rx(r"\bi (?:now |currently |still )?live in (?P<v>.+)"), _home),
    _Rule(_rx(r"\bi(?:'m| am) (?:now |currently )?(?:living|based|staying) in (?P<v>.+)"), _home),
    _Rule(
        _rx(
            r"\b(?:i|we)(?:'ve| have)? ?(?:just |recently |finally |now )?(?:moved|relocated) (?:to|into) (?P<v>.+)"
        ),
        _home,
    ),
    _Rule(_rx(r"^home (?:for me |for us )?is (?:now )?(?P<v>.+)"), _home),
    _Rule(_rx(r"\bmy (?:home|apartment|flat|house) is in (?P<v>.+)"), _home),
    _Rule(_rx(r"\bi(?:'m| am) (?:originally )?from (?P<v>.+)"), _hometown),
    _Rule(_rx(r"\bi grew up in (?P<v>.+)"), _hometown),
    _Rule(_rx(r"\bi (?:now |currently )?work (?:at|for) (?P<v>.+)"), _employer),
    _Rule(
        _rx(r"\bi(?:'m| am) (?:now |currently )?(?:working|employed) (?:at|for|with) (?P<v>.+)"), _employer
    ),
    _Rule(
        _rx(
            r"\bi(?:'ve| have)? ?(?:just |recently )?(?:joined|started (?:a new job |working )?at) (?P<v>.+)"
        ),
        _employer,
    ),
    _Rule(_rx(r"\bi work as (?:a |an )?(?P<v>.+)"), _job),
    _Rule(_rx(r"\b(?:work|working|employed) (?:at|for) .+? as (?:a |an )(?P<v>.+)"), _job),
    _Rule(_rx(r"\bmy (?:job|role|title) is (?:a |an )?(?P<v>.+)"), _job),
    _Rule(_rx(r"^(?:i'm|i am) (?:a |an )(?P<v>[\w -]+)"), _job),
    _Rule(_rx(r"\bmy name(?:'s| is) (?P<v>.+)"), _name),
    _Rule(_rx(r"^(?:please )?call me (?P<v>.+)"), _name),
    _Rule(
        _rx(
            r"\bi(?:'m| am) (?:a |now |strictly )?(?P<v>vegetarian|vegan|pescatarian|gluten[- ]free|lactose intolerant)\b"
        ),
        _diet,
    ),
    _Rule(_rx(r"\bi(?:'m| am) (?:severely |very )?allergic to (?P<v>.+)"), _allergy),
    _Rule(
        _rx(
            r"\bi (?:(?:really |just |still )?(?:don't|do not|no longer) (?:like|enjoy|love)|hate|dislike|can't stand|cannot stand|stopped liking) (?P<v>.+)"
        ),
        _dislikes,
    ),
    _Rule(_rx(r"\bi (?:really |absolutely |just )?(?:like|love|enjoy|adore) (?P<v>.+)"), _likes),
    _Rule(
        _rx(r"\bi(?:'m| am) (?:a (?:big |huge )?fan of|really into|into|passionate about) (?P<v>.+)"), _likes
    ),
    _Rule(_rx(r"^(?P<v>[\w' -]{2,40}?) (?:is|are) my (?:favourite|favorite) (?:thing|hobby)"), _likes),
    _Rule(
        _rx(
            r"\bi (?:much |really |generally |always )?(?:prefer|like|want|need) (?P<v>(?:short|shorter|concise|brief|succinct|terse|detailed|longer|long|thorough|in-depth|comprehensive)[\w -]*(?:answers?|replies|responses|explanations?))"
        ),
        _style,
    ),
    _Rule(_rx(r"\bkeep (?:your )?(?P<v>(?:answers?|replies|responses) (?:short|brief|concise))"), _style),
    _Rule(_rx(r"\bi (?:much |really |generally )?(?:prefer|'d rather|would rather) (?P<v>.+)"), _prefers),
    _Rule(
        _rx(
            r"\bi(?:'m| am) (?:currently |now |still )?(?:working on|building|writing|developing|making|creating) (?P<v>.+)"
        ),
        _project,
    ),
    _Rule(_rx(r"\bmy (?:current |side |new |main )?project is(?: called)? (?P<v>.+)"), _project),
    _Rule(
        _rx(r"\bi(?:'ve| have)? ?(?:just |finally )?(?:finished|shipped|completed|wrapped up) (?P<v>.+)"),
        _project_done,
    ),
]

_CONSTRAINT = [
    _rx(
        r"\b(?:it|the project|the app|the site|the tool|this) (?P<v>(?:needs to|must|has to|should|can't|cannot|must not|needs) .+)"
    ),
    _rx(r"\bthe (?P<v>deadline is .+)"),
    _rx(r"\b(?:it's|it is) (?P<v>due .+)"),
    _rx(r"\bmy (?:budget|constraint) is (?P<v>.+)"),
]


class RuleExtractor:
    """Deterministic patterns for first-person statements in English.

    Third-person statements ("my friend lives in Paris"), questions and hypotheticals ("if I
    moved to Rome…") are skipped: a wrong memory costs more than a missed one, because the
    person sees it in /memory and the model repeats it.
    """

    name = "rules"

    def extract(self, turns: Sequence[Turn]) -> list[Candidate]:
        out: list[Candidate] = []
        last_project = ""
        for turn in turns:
            if turn.role != "user":
                continue
            for sentence in sentences(turn.text):
                if sentence.endswith("?") or _HYPOTHETICAL.search(sentence):
                    continue
                found = self._statements(sentence, turn)
                if found:
                    out.extend(found)
                    for cand in found:
                        if cand.kind == "project" and cand.op == "set":
                            last_project = cand.slot
                    continue
                detail = self._constraint(sentence)
                if detail:
                    # "project:*": the person's most recent project, when this batch named none
                    out.append(
                        Candidate(
                            kind="project",
                            text="",
                            slot=last_project or "project:*",
                            value="",
                            turn_id=turn.id,
                            ts=turn.ts,
                            op="update",
                            detail=detail,
                            confidence=0.8,
                        )
                    )
        return out

    @staticmethod
    def _statements(sentence: str, turn: Turn) -> list[Candidate]:
        """Every rule that matches, one candidate per slot family ("taste", "home", …)."""
        found: dict[str, Candidate] = {}
        for rule in RULES:
            match = rule.pattern.search(sentence)
            if not match:
                continue
            built = rule.build(match)
            if built is None:
                continue
            kind, text, slot, value, op = built
            family = slot.split(":", 1)[0] or text
            found.setdefault(family, Candidate(kind, text, slot, value, turn.id, turn.ts, 0.9, op))
        return list(found.values())

    @staticmethod
    def _constraint(sentence: str) -> str:
        for pattern in _CONSTRAINT:
            match = pattern.search(sentence)
            if match:
                detail = re.split(r"[.;!?]", match.group("v"), maxsplit=1)[0].strip()
                return " ".join(detail.split()[:12])
        return ""


# -- the LLM extractor ------------------------------------------------------------------------------

LLM_KINDS = ("fact", "preference", "project")

LLM_INSTRUCTIONS = """You extract durable facts about the USER from chat messages.
Return ONLY a JSON object: {"memories": [{"kind": "fact"|"preference"|"project", "text": short
third-person-free phrase such as "Lives in Lisbon", "slot": what it is about ("home", "employer",
"job", "name", "diet", "taste:<thing>", "project:<name>", or "" if none), "value": the value in
lower case, "turn": the message number it came from, "confidence": 0..1, "ended": true only if the
message says it stopped being true}]}.
Only what the user states about themselves; nothing about other people, questions or wishes.
If there is nothing, return {"memories": []}."""


class _LLMMemory(BaseModel):
    kind: Literal["fact", "preference", "project"]
    text: str = Field(min_length=2, max_length=200)
    slot: str = Field(default="", max_length=80)
    value: str = Field(default="", max_length=120)
    turn: int = Field(ge=1)
    confidence: float = Field(default=0.7, ge=0.0, le=1.0)
    ended: bool = False

    @field_validator("text", "slot", "value")
    @classmethod
    def _strip(cls, v: str) -> str:
        return " ".join(v.split())


class _LLMAnswer(BaseModel):
    memories: list[_LLMMemory]


class MalformedOutput(ValueError):
    """The model's answer was not the JSON we asked for."""


def parse_llm_answer(raw: str, n_turns: int) -> list[_LLMMemory]:
    """The validated memories in a model answer; raises MalformedOutput otherwise."""
    start, end = raw.find("{"), raw.rfind("}")
    if start < 0 or end <= start:
        raise MalformedOutput("no JSON object in the answer")
    try:
        answer = _LLMAnswer.model_validate(json.loads(raw[start : end + 1]))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise MalformedOutput(str(exc).splitlines()[0]) from exc
    for item in answer.memories:
        if item.turn > n_turns:
            raise MalformedOutput(f"turn {item.turn} does not exist")
    return answer.memories


class LLMExtractor:
    """A capable model asked for JSON; `complete` takes chat messages and returns the text.

    Malformed answers are retried `retries` times, then the batch is dropped (logged, counted
    in `dropped`): the rule extractor's aggregate signals still run, and the turns are not
    lost — they stay in the store and in recall.
    """

    name = "llm"

    def __init__(self, complete: Callable[[list[dict[str, str]]], str], *, retries: int = 2) -> None:
        self.complete = complete
        self.retries = retries
        self.dropped = 0

    def extract(self, turns: Sequence[Turn]) -> list[Candidate]:
        said = [t for t in turns if t.role == "user" and t.text.strip()]
        if not said:
            return []
        numbered = "\n".join(f"{i}. {t.text[:1000]}" for i, t in enumerate(said, 1))
        messages = [
            {"role": "system", "content": LLM_INSTRUCTIONS},
            {"role": "user", "content": f"Messages:\n{numbered}"},
        ]
        for attempt in range(self.retries + 1):
            try:
                raw = self.complete(messages)
                items = parse_llm_answer(raw, len(said))
            except MalformedOutput as exc:
                log.warning("extractor answer malformed", attempt=attempt + 1, error=str(exc)[:200])
                continue
            except Exception as exc:  # the model backend failed: same treatment as bad output
                log.warning("extractor model failed", attempt=attempt + 1, error=type(exc).__name__)
                continue
            return [self._candidate(item, said[item.turn - 1]) for item in items]
        self.dropped += 1
        log.warning("extractor gave up on a batch; turns stay unconsolidated", turns=len(said))
        return []

    @staticmethod
    def _candidate(item: _LLMMemory, turn: Turn) -> Candidate:
        slot = normalize(item.slot)
        return Candidate(
            kind=item.kind,
            text=item.text,
            slot=slot,
            value=normalize(item.value) or normalize(item.text),
            turn_id=turn.id,
            ts=turn.ts,
            confidence=item.confidence,
            op="end" if item.ended else "set",
        )
