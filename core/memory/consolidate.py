"""Consolidation: a person's new turns become memories, mem0-style, and a short profile.

For every candidate an extractor proposes, one decision, taken against the person's CURRENT
memories of the SAME visibility scope (group evidence and private evidence never meet, so no
memory can carry a group's words into a direct chat or the other way round):

- ADD        nothing known about it yet;
- UPDATE     merge into a memory (a project's new constraint, more evidence for a preference);
- SUPERSEDE  a contradiction: the old memory gets `valid_to` and stays in history
             ("I moved to Lisbon" over "I live in Berlin");
- NOOP       already known.

Two aggregate memories come from history rather than one turn: a question asked in variations
three or more times, and an implicit "prefers concise answers" from repeated requests for
shorter answers.

Re-running is safe: memory ids are derived from (person, scope, kind, slot, first evidence turn),
a slot holds one current value, and evidence is merged as sets, so a task re-run after a crash
reaches the same memories instead of duplicating them. `PersonSettings.memory_state` records
which turns were read, so a normal run only reads what is new.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import structlog

from core.memory.extract import (
    Candidate,
    Extractor,
    RuleExtractor,
    asks_for_brevity,
    is_question,
    normalize,
)
from core.memory.records import PRIVATE, Memory, Person, Turn
from core.memory.store import Store
from core.text import preview

log = structlog.get_logger(__name__)

Op = Literal["ADD", "UPDATE", "SUPERSEDE", "NOOP"]

# Turns may arrive a little out of order (platform timestamps, retries): each run re-reads this
# much before the watermark and skips the ids it already read there.
REREAD_WINDOW = timedelta(hours=6)
QUESTION_REPEATS = 3
QUESTION_DISTANCE = 0.5
BREVITY_REPEATS = 2
HISTORY_WINDOW = 300
NEAR_DUPLICATE_DISTANCE = 0.08
PROFILE_CHARS = 600


@dataclass
class Decision:
    op: Op
    memory: Memory
    old: Memory | None = None
    reason: str = ""


@dataclass
class Result:
    person_id: str
    turns_read: int = 0
    read: list[Turn] = field(default_factory=list)  # the turns this run read (follow-ups look at them)
    decisions: list[Decision] = field(default_factory=list)
    profile: str = ""

    def count(self, op: Op) -> int:
        return sum(1 for d in self.decisions if d.op == op)

    def summary(self) -> dict[str, int]:
        return {op.lower(): self.count(op) for op in ("ADD", "UPDATE", "SUPERSEDE", "NOOP")}


def memory_id(person_id: str, scope: str, kind: str, key: str, first_turn_id: str) -> str:
    """The same evidence always yields the same id: re-runs replace, never duplicate."""
    raw = "\x1f".join((person_id, scope, kind, key, first_turn_id))
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:32]


# -- slots of stored memories ------------------------------------------------------------------

_SLOT_TEXT: list[tuple[re.Pattern[str], Callable[[re.Match[str]], tuple[str, str]]]] = [
    (re.compile(r"^Lives in (.+)$"), lambda m: ("home", normalize(m.group(1)))),
    (re.compile(r"^Is originally from (.+)$"), lambda m: ("hometown", normalize(m.group(1)))),
    (re.compile(r"^Works at (.+)$"), lambda m: ("employer", normalize(m.group(1)))),
    (re.compile(r"^Works as an? (.+)$"), lambda m: ("job", normalize(m.group(1)))),
    (re.compile(r"^Is called (.+)$"), lambda m: ("name", normalize(m.group(1)))),
    (
        re.compile(r"^Is (vegetarian|vegan|pescatarian|gluten[- ]free|lactose intolerant)$"),
        lambda m: ("diet", normalize(m.group(1))),
    ),
    (re.compile(r"^Is allergic to (.+)$"), lambda m: (f"allergy:{_key(m.group(1))}", _key(m.group(1)))),
    (re.compile(r"^Likes (.+)$"), lambda m: (f"taste:{_key(m.group(1))}", "likes")),
    (re.compile(r"^Dislikes (.+)$"), lambda m: (f"taste:{_key(m.group(1))}", "dislikes")),
    (re.compile(r"^Prefers (concise|detailed) answers"), lambda m: ("style:length", m.group(1))),
    (re.compile(r"^Working on ([^,(]+)"), lambda m: (f"project:{_key(m.group(1))}", _key(m.group(1)))),
]
_ARTICLES = re.compile(r"^(?:the|a|an|my|our|some)\s+", re.IGNORECASE)


def _key(value: str) -> str:
    return normalize(_ARTICLES.sub("", value.strip()))


def slot_of(memory: Memory) -> tuple[str, str]:
    """(slot, value) of a stored memory, read back from its canonical text; ("", text) if none."""
    if memory.kind in ("fact", "preference", "project"):
        for pattern, build in _SLOT_TEXT:
            match = pattern.match(memory.text)
            if match:
                return build(match)
    return "", normalize(memory.text)


_CONSTRAINTS = re.compile(r"\s*\(([^()]*)\)$")


def _project_text(base: str, constraints: list[str]) -> str:
    return base + (f" ({'; '.join(constraints)})" if constraints else "")


def _split_project(text: str) -> tuple[str, list[str]]:
    match = _CONSTRAINTS.search(text)
    if not match:
        return text, []
    return text[: match.start()], [c.strip() for c in match.group(1).split(";") if c.strip()]


# -- the profile -------------------------------------------------------------------------------------

_PROFILE_ORDER = {
    "name": 0,
    "home": 1,
    "hometown": 2,
    "job": 3,
    "employer": 4,
    "diet": 5,
    "style:length": 6,
}


def profile_text(memories: Iterable[Memory]) -> str:
    """A few sentences the prompt puts first: who this is, what they do now, how they like answers.

    Built only from PRIVATE memories: the profile is shown in direct chats (and in groups the
    person explicitly shared it with), so group-scoped evidence never reaches it.
    """
    ranked: list[tuple[int, float, str]] = []
    for m in memories:
        if not m.current or m.visibility != PRIVATE or m.kind == "summary":
            continue
        slot, _ = slot_of(m)
        if slot in _PROFILE_ORDER:
            rank = _PROFILE_ORDER[slot]
        elif m.kind == "project":
            rank = 10
        elif m.kind == "preference":
            rank = 20
        elif m.kind == "question":
            rank = 40
        else:
            rank = 30
        text = m.text if m.kind != "question" else preview(m.text, 160)
        ranked.append((rank, -m.confidence, text.rstrip(".")))
    ranked.sort()
    out: list[str] = []
    used = 0
    for _, _, text in ranked:
        if used + len(text) + 2 > PROFILE_CHARS:
            break
        out.append(text)
        used += len(text) + 2
    return ". ".join(out) + ("." if out else "")


# -- the consolidator --------------------------------------------------------------------------------


@dataclass
class _Scope:
    """The current memories of one visibility scope, indexed by slot, updated as decisions land."""

    name: str
    memories: dict[str, Memory]
    by_slot: dict[str, str]

    @classmethod
    def load(cls, store: Store, person_id: str, scope: str) -> _Scope:
        current = store.memories_of(person_id, visibilities=[scope])
        by_slot: dict[str, str] = {}
        for m in sorted(current, key=lambda m: m.valid_from):
            slot, _ = slot_of(m)
            if slot:
                by_slot[slot] = m.id
        return cls(scope, {m.id: m for m in current}, by_slot)

    def slot(self, slot: str) -> Memory | None:
        mid = self.by_slot.get(slot)
        return self.memories.get(mid) if mid else None

    def latest_project(self) -> Memory | None:
        projects = [m for m in self.memories.values() if m.kind == "project"]
        return max(projects, key=lambda m: (m.updated_at, m.valid_from)) if projects else None

    def land(self, memory: Memory) -> None:
        if memory.current:
            self.memories[memory.id] = memory
            slot, _ = slot_of(memory)
            if slot:
                self.by_slot[slot] = memory.id
        else:
            self.memories.pop(memory.id, None)
            slot, _ = slot_of(memory)
            if slot and self.by_slot.get(slot) == memory.id:
                del self.by_slot[slot]


class Consolidator:
    """Reads a person's unread turns and revises their memories and profile; no Celery here."""

    def __init__(
        self,
        store: Store,
        extractor: Extractor | None = None,
        *,
        pause_after_first_write: float = 0.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.extractor = extractor or RuleExtractor()
        self.pause_after_first_write = pause_after_first_write
        self.clock = clock
        self._writes = 0

    # -- entry points -------------------------------------------------------------------------

    def pending(self, person: Person) -> list[Turn]:
        """The person's user turns consolidation has not read yet (oldest first)."""
        state = person.settings.memory_state or {}
        until = _parse_ts(state.get("until"))
        seen = set(state.get("seen", []))
        since = until - REREAD_WINDOW if until else None
        turns = self.store.turns_of(person.person_id, since=since)
        new = [t for t in turns if t.role == "user" and t.id not in seen]
        if since is not None and "count" in state:
            total = self.store.count_turns(person.person_id, role="user")
            if total > int(state["count"]) + len(new):
                # turns older than the watermark arrived (an imported history): read everything
                # again; decisions are idempotent, so what was read before changes nothing
                everything = self.store.turns_of(person.person_id)
                return [t for t in everything if t.role == "user"]
        return new

    def run(self, person_id: str) -> Result:
        """Consolidate what is new; safe to re-run at any point (see the module docstring)."""
        result = Result(person_id)
        person = self.store.refresh_person(person_id)
        if person is None:
            return result
        new = self.pending(person)
        result.turns_read = len(new)
        result.read = new
        by_scope: dict[str, list[Turn]] = {}
        for turn in new:
            by_scope.setdefault(turn.visibility, []).append(turn)
        self._writes = 0
        for scope in sorted(by_scope):
            result.decisions += self._scope(person_id, scope, by_scope[scope])
        result.profile = self.refresh_profile(person_id, read=new)
        log.info(
            "consolidated",
            person=person_id,
            turns=len(new),
            extractor=self.extractor.name,
            **result.summary(),
        )
        return result

    def drop_orphans(self, person_id: str) -> int:
        """Delete memories whose every source turn is gone: a consolidation that ran while the
        person forgot those turns (or erased themselves) must not leave what it learned."""
        memories = self.store.memories_of(person_id, current_only=False)
        sources = {t for m in memories for t in m.source_turn_ids}
        alive = {t.id for t in self.store.turns_by_ids(sources)}
        orphans = [m.id for m in memories if m.source_turn_ids and not alive & set(m.source_turn_ids)]
        if orphans:
            self.store.delete_memories(orphans)
            self.store.purge_history()
            log.info("dropped memories of forgotten turns", person=person_id, memories=len(orphans))
        return len(orphans)

    def refresh_profile(self, person_id: str, *, read: list[Turn] | None = None) -> str:
        """Regenerate the profile from current private memories; record the turns read."""
        person = self.store.refresh_person(person_id)
        if person is None:
            return ""
        profile = profile_text(self.store.memories_of(person_id, visibilities=[PRIVATE]))
        state = dict(person.settings.memory_state or {})
        if read:
            until = max([t.ts for t in read] + [_parse_ts(state.get("until")) or read[0].ts])
            floor = until - REREAD_WINDOW
            seen = set(state.get("seen", [])) | {t.id for t in read}
            kept = {t.id for t in self.store.turns_of(person_id, since=floor) if t.id in seen}
            count = self.store.count_turns(person_id, role="user")
            state = {"until": until.isoformat(), "seen": sorted(kept), "count": count}
        if profile == person.profile and state == (person.settings.memory_state or {}):
            return profile
        person.profile = profile
        person.settings.memory_state = state
        self.store.save_person(person)
        return profile

    # -- one scope ------------------------------------------------------------------------------

    def _scope(self, person_id: str, scope: str, turns: list[Turn]) -> list[Decision]:
        """Decide everything first (in memory), embed what will be written in one batch, then
        write decision by decision: a crash between two writes leaves a state a re-run completes."""
        known = _Scope.load(self.store, person_id, scope)
        decisions: list[Decision] = []
        candidates = sorted(self.extractor.extract(turns), key=lambda c: c.ts)
        for cand in candidates:
            decisions.append(self._decide(person_id, known, cand))
            self._land(decisions[-1], known)
        for decision in self._questions(person_id, known, turns):
            decisions.append(decision)
            self._land(decision, known)
        decision = self._brevity(person_id, known, turns)
        if decision is not None:
            decisions.append(decision)
            self._land(decision, known)
        writes = [d for d in decisions if d.op != "NOOP"]
        unembedded = [d.memory for d in writes if d.memory.vector is None]
        for memory, vector in zip(unembedded, self.store.embed([m.text for m in unembedded]), strict=True):
            memory.vector = vector
        for decision in writes:
            self._commit(decision)
        return decisions

    def _decide(self, person_id: str, known: _Scope, c: Candidate) -> Decision:
        now = self.clock()
        if not c.slot:
            return self._free(person_id, known, c)
        current = known.latest_project() if c.slot == "project:*" else known.slot(c.slot)
        if c.op == "end":
            if current is None or (c.value and slot_of(current)[1] != c.value and c.kind != "project"):
                return Decision(
                    "NOOP", current or self._new(person_id, known.name, c), reason="nothing to end"
                )
            ended = replace(current, valid_to=max(c.ts, current.valid_from), updated_at=now)
            return Decision("SUPERSEDE", ended, old=current, reason="ended")
        if c.op == "update":
            if current is None:
                return Decision("NOOP", self._new(person_id, known.name, c), reason="no project to update")
            base, constraints = _split_project(current.text)
            if normalize(c.detail) in {normalize(x) for x in constraints}:
                return Decision("NOOP", current, reason="constraint known")
            merged = replace(
                current,
                text=_project_text(base, [*constraints, c.detail]),
                source_turn_ids=_union(current.source_turn_ids, [c.turn_id]),
                updated_at=now,
                vector=None,
            )
            return Decision("UPDATE", merged, old=current, reason="constraint added")
        if current is None:
            return Decision("ADD", self._new(person_id, known.name, c))
        if slot_of(current)[1] == c.value:
            if c.turn_id in current.source_turn_ids:
                return Decision("NOOP", current, reason="same evidence")
            if (
                current.kind == "project"
                and c.text != _split_project(current.text)[0]
                and len(c.text) > len(_split_project(current.text)[0])
            ):
                _, constraints = _split_project(current.text)
                merged = replace(
                    current,
                    text=_project_text(c.text, constraints),
                    source_turn_ids=_union(current.source_turn_ids, [c.turn_id]),
                    updated_at=now,
                    vector=None,
                )
                return Decision("UPDATE", merged, old=current, reason="project described")
            return Decision("NOOP", current, reason="already known")
        if c.ts < current.valid_from:
            # an older statement read late must not overturn a newer one
            return Decision("NOOP", current, reason="older than what is known")
        return Decision(
            "SUPERSEDE",
            self._new(person_id, known.name, c),
            old=replace(current, valid_to=c.ts, updated_at=now),
            reason="contradiction",
        )

    def _free(self, person_id: str, known: _Scope, c: Candidate) -> Decision:
        text = normalize(c.text)
        for m in known.memories.values():
            if m.kind == c.kind and normalize(m.text) == text:
                return Decision("NOOP", m, reason="same text")
        [vector] = self.store.embed([c.text])
        hits = self.store.search("memories", person_id, vector, visibilities=[known.name], k=3)
        for hit in hits:
            if hit.distance <= NEAR_DUPLICATE_DISTANCE and hit.item.kind == c.kind:
                return Decision("NOOP", hit.item, reason="near duplicate")
        memory = self._new(person_id, known.name, c)
        memory.vector = vector
        return Decision("ADD", memory)

    def _new(self, person_id: str, scope: str, c: Candidate) -> Memory:
        now = self.clock()
        return Memory(
            person_id=person_id,
            kind=c.kind,  # type: ignore[arg-type]
            text=c.text,
            id=memory_id(person_id, scope, c.kind, c.slot or normalize(c.text), c.turn_id),
            source_turn_ids=[c.turn_id],
            confidence=c.confidence,
            visibility=scope,
            created_at=now,
            updated_at=now,
            valid_from=c.ts,
        )

    # -- aggregates ------------------------------------------------------------------------------

    def _questions(self, person_id: str, known: _Scope, turns: list[Turn]) -> list[Decision]:
        """A question asked in variations 3+ times becomes one memory listing the variations."""
        asked = [t for t in turns if t.role == "user" and is_question(t.text)]
        if not asked:
            return []
        decisions: list[Decision] = []
        covered: set[str] = set()
        vectors = self.store.embed([t.text for t in asked])
        for turn, vector in zip(asked, vectors, strict=True):
            if turn.id in covered:
                continue
            hits = self.store.search("turns", person_id, vector, visibilities=[known.name], k=30)
            cluster = [
                h.item
                for h in hits
                if h.distance <= QUESTION_DISTANCE and h.item.role == "user" and is_question(h.item.text)
            ]
            if turn.id not in {t.id for t in cluster}:
                cluster.append(turn)
            if 2 <= len(cluster) < QUESTION_REPEATS:
                cluster = self._one_hop(person_id, known.name, turn, cluster)
            cluster.sort(key=lambda t: t.ts)
            ids = [t.id for t in cluster]
            covered |= set(ids)
            if len(cluster) < QUESTION_REPEATS:
                continue
            existing = [
                m
                for m in known.memories.values()
                if m.kind == "question" and set(m.source_turn_ids) & set(ids)
            ]
            now = self.clock()
            if existing:
                old = max(existing, key=lambda m: len(m.source_turn_ids))
                if set(ids) <= set(old.source_turn_ids):
                    decisions.append(Decision("NOOP", old, reason="question known"))
                    continue
                sources = _union(old.source_turn_ids, ids)
                texts = {t.id: t.text for t in cluster}
                missing = [i for i in sources if i not in texts]
                texts.update({t.id: t.text for t in self.store.turns_by_ids(missing)})
                merged = replace(
                    old,
                    text=_question_text([texts[i] for i in sources if i in texts]),
                    source_turn_ids=sources,
                    confidence=_question_confidence(len(sources)),
                    updated_at=now,
                    vector=None,
                )
                decisions.append(Decision("UPDATE", merged, old=old, reason="asked again"))
                continue
            memory = Memory(
                person_id=person_id,
                kind="question",
                text=_question_text([t.text for t in cluster]),
                id=memory_id(person_id, known.name, "question", "", ids[0]),
                source_turn_ids=ids,
                confidence=_question_confidence(len(ids)),
                visibility=known.name,
                created_at=now,
                updated_at=now,
                valid_from=cluster[0].ts,
            )
            decisions.append(Decision("ADD", memory, reason="recurring question"))
        return decisions

    def _one_hop(self, person_id: str, scope: str, turn: Turn, cluster: list[Turn]) -> list[Turn]:
        """Variations drift: B is close to A and C to B while C is further from A. One hop of
        neighbours-of-neighbours joins them without chaining across unrelated questions."""
        others = [t for t in cluster if t.id != turn.id]
        found = {t.id: t for t in cluster}
        for vector in self.store.embed([t.text for t in others]):
            for hit in self.store.search("turns", person_id, vector, visibilities=[scope], k=30):
                item = hit.item
                if hit.distance <= QUESTION_DISTANCE and item.role == "user" and is_question(item.text):
                    found.setdefault(item.id, item)
        return list(found.values())

    def _brevity(self, person_id: str, known: _Scope, turns: list[Turn]) -> Decision | None:
        """Repeated requests for shorter answers: an implicit 'prefers concise answers'."""
        if not any(t.role == "user" and asks_for_brevity(t.text) for t in turns):
            return None
        history = self.store.turns_of(person_id, visibilities=[known.name], limit=HISTORY_WINDOW)
        asked = [t for t in history if t.role == "user" and asks_for_brevity(t.text)]
        asked += [t for t in turns if asks_for_brevity(t.text) and t.id not in {a.id for a in asked}]
        if len(asked) < BREVITY_REPEATS:
            return None
        ids = [t.id for t in sorted(asked, key=lambda t: t.ts)]
        current = known.slot("style:length")
        now = self.clock()
        confidence = min(0.9, 0.4 + 0.1 * len(ids))
        text = f"Prefers concise answers (asked for shorter answers {len(ids)} times)"
        if current is None:
            memory = Memory(
                person_id=person_id,
                kind="preference",
                text=text,
                id=memory_id(person_id, known.name, "preference", "style:length", ids[0]),
                source_turn_ids=ids,
                confidence=confidence,
                visibility=known.name,
                created_at=now,
                updated_at=now,
                valid_from=asked[0].ts,
            )
            return Decision("ADD", memory, reason="implicit preference")
        if slot_of(current)[1] == "concise":
            if set(ids) <= set(current.source_turn_ids):
                return Decision("NOOP", current, reason="implicit preference known")
            explicit = not current.text.startswith("Prefers concise answers (asked")
            merged = replace(
                current,
                text=current.text if explicit else text,
                source_turn_ids=_union(current.source_turn_ids, ids),
                confidence=max(current.confidence, confidence),
                updated_at=now,
                vector=None,
            )
            return Decision("UPDATE", merged, old=current, reason="more evidence")
        later = [t for t in asked if t.ts > current.valid_from]
        if len(later) < BREVITY_REPEATS:
            return Decision("NOOP", current, reason="explicit preference stands")
        memory = Memory(
            person_id=person_id,
            kind="preference",
            text=f"Prefers concise answers (asked for shorter answers {len(later)} times)",
            id=memory_id(person_id, known.name, "preference", "style:length", later[0].id),
            source_turn_ids=[t.id for t in later],
            confidence=confidence,
            visibility=known.name,
            created_at=now,
            updated_at=now,
            valid_from=later[-1].ts,
        )
        return Decision(
            "SUPERSEDE",
            memory,
            old=replace(current, valid_to=later[-1].ts, updated_at=now),
            reason="behaviour",
        )

    # -- writing ---------------------------------------------------------------------------------

    @staticmethod
    def _rows(decision: Decision) -> list[Memory]:
        rows = [decision.memory]
        if decision.op == "SUPERSEDE" and decision.old is not None and decision.old.id != decision.memory.id:
            rows.insert(0, decision.old)
        return rows

    def _land(self, decision: Decision, known: _Scope) -> None:
        if decision.op != "NOOP":
            for row in self._rows(decision):
                known.land(row)

    def _commit(self, decision: Decision) -> None:
        """One store write per decision; a supersede writes both rows in one commit."""
        self.store.save_memories(self._rows(decision))
        self._writes += 1
        if self._writes == 1 and self.pause_after_first_write > 0:
            time.sleep(self.pause_after_first_write)


def _union(a: Iterable[str], b: Iterable[str]) -> list[str]:
    out = list(dict.fromkeys([*a, *b]))
    return out


def _question_text(questions: list[str]) -> str:
    latest = questions[-1]
    earlier = [q for q in questions[:-1]][-3:]
    text = f"Has asked {len(questions)} times about the same thing: “{preview(latest, 140)}”"
    if earlier:
        text += " (earlier: " + "; ".join(f"“{preview(q, 100)}”" for q in earlier) + ")"
    return text


def _question_confidence(n: int) -> float:
    return min(0.95, 0.5 + 0.1 * (n - 2))


def _parse_ts(raw: str | None) -> datetime | None:
    if not raw:
        return None
    ts = datetime.fromisoformat(raw)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)
