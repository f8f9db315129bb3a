"""What each page shows, read from the store for one person (blocking: call in a thread).

The handlers (bots/web/app.py) pass the person their session resolves to; nothing here takes
an id from the request without checking it belongs to that person.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Any

from core import own_data
from core.memory.records import PRIVATE, Memory, Person, Turn
from core.text import preview

if TYPE_CHECKING:
    from core.assistant import Assistant

KINDS = ("fact", "preference", "project", "question", "summary")
RECENT_MESSAGES = 20  # as many as /memory lists
PAGE_SIZE = 100


def scope_label(scope: str) -> str:
    if scope == PRIVATE:
        return "Direct chats"
    _, platform, chat_id = scope.split(":", 2)
    return f"{platform.capitalize()} group {chat_id}"


def chat_label(turn: Turn) -> str:
    if turn.visibility == PRIVATE:
        return f"direct chat on {turn.platform.capitalize()}"
    return f"{turn.platform.capitalize()} group {turn.chat_id}"


def day(ts: datetime | None) -> str:
    return "" if ts is None else f"{ts.day} {ts:%b %Y}"


@dataclass
class Filters:
    """The list's filters as the form sent them; `problems` says what could not be read."""

    q: str = ""
    kind: str = ""
    platform: str = ""
    scope: str = ""
    since: date | None = None
    until: date | None = None
    page: int = 1
    problems: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, query: Any) -> Filters:
        f = cls(
            q=query.get("q", "").strip()[:500],
            kind=query.get("kind", ""),
            platform=query.get("platform", "").strip().lower(),
            scope=query.get("scope", ""),
        )
        if f.kind and f.kind not in (*KINDS, "message"):
            f.problems.append(f"There is no kind “{preview(f.kind, 30)}”: showing every kind.")
            f.kind = ""
        for name in ("since", "until"):
            raw = query.get(name, "").strip()
            if not raw:
                continue
            try:
                setattr(f, name, date.fromisoformat(raw))
            except ValueError:
                f.problems.append(
                    f"“{preview(raw, 30)}” is not a date like 2026-05-31: the {name} filter is off."
                )
        try:
            f.page = max(1, int(query.get("page", "1")))
        except ValueError:
            f.page = 1
        return f

    @property
    def active(self) -> bool:
        return bool(self.q or self.kind or self.platform or self.scope or self.since or self.until)

    def admits(self, kind: str, scope: str, platforms: set[str], ts: datetime) -> bool:
        if self.kind and kind != self.kind:
            return False
        if self.scope and scope != self.scope:
            return False
        if self.platform and self.platform not in platforms:
            return False
        if self.since and ts < datetime.combine(self.since, time.min, UTC):
            return False
        return not (self.until and ts > datetime.combine(self.until, time.max, UTC))


@dataclass
class Source:
    when: str
    where: str
    text: str


@dataclass
class MemoryRow:
    memory: Memory
    when: str
    where: str
    sources: list[Source]
    history: list[tuple[str, str, str]]  # (text, from, until)
    platforms: set[str]


@dataclass
class MessageRow:
    turn: Turn
    when: str
    where: str
    text: str


@dataclass
class Overview:
    person: Person
    rows: list[MemoryRow | MessageRow]
    scopes: list[tuple[str, str]]
    platforms: list[str]
    total: int
    pages: int
    searched: bool


def _memory_rows(assistant: Assistant, memories: list[Memory], everything: list[Memory]) -> list[MemoryRow]:
    wanted = {t for m in memories for t in m.source_turn_ids}
    turns = {t.id: t for t in assistant.store.turns_by_ids(wanted)} if wanted else {}
    rows = []
    for m in memories:
        sources = [turns[t] for t in m.source_turn_ids if t in turns and turns[t].person_id == m.person_id]
        platforms = {t.platform for t in sources}
        if m.visibility != PRIVATE:
            platforms.add(m.visibility.split(":", 2)[1])
        rows.append(
            MemoryRow(
                memory=m,
                when=day(m.valid_from),
                where=scope_label(m.visibility),
                sources=[
                    Source(day(t.ts), chat_label(t), preview(t.text, 300))
                    for t in sorted(sources, key=lambda t: t.ts)
                ],
                history=[
                    (old.text, day(old.valid_from), day(old.valid_to))
                    for old in own_data.superseded_by(m, everything)
                ],
                platforms=platforms,
            )
        )
    return rows


def _message_row(t: Turn) -> MessageRow:
    said = {"user": "You said", "assistant": "I said"}.get(t.role, "From your chats")
    return MessageRow(turn=t, when=day(t.ts), where=chat_label(t), text=f"{said}: “{preview(t.text, 500)}”")


def overview(assistant: Assistant, person: Person, filters: Filters) -> Overview:
    """The main page: memories (or search hits) with sources and history, then recent messages."""
    store = assistant.store
    store.settle_turns_of(person.person_id)
    everything = store.memories_of(person.person_id, current_only=False)
    current = [m for m in everything if m.current]
    turns = store.turns_of(person.person_id)
    scopes = own_data.scopes_of(everything, turns)
    wanted_scopes = [filters.scope] if filters.scope in scopes else scopes
    if filters.scope and filters.scope not in scopes:
        filters.problems.append("You have nothing in that chat: showing every chat.")
        filters.scope = ""
    rows: list[MemoryRow | MessageRow]
    if filters.q:
        found = own_data.search(assistant, person, filters.q, wanted_scopes)
        hit_rows = _memory_rows(assistant, [f.memory for f in found if f.memory], everything)
        by_id = {r.memory.id: r for r in hit_rows}
        rows = [by_id[f.memory.id] if f.memory else _message_row(f.turn) for f in found]
    else:
        said = [t for t in turns if t.role == "user"]
        recent = list(reversed(said))[:RECENT_MESSAGES] if not filters.active else list(reversed(said))
        rows = [*_memory_rows(assistant, current, everything), *map(_message_row, recent)]
    kept = [r for r in rows if _admitted(filters, r)]
    pages = max(1, -(-len(kept) // PAGE_SIZE))
    page = min(filters.page, pages)
    platforms = sorted({t.platform for t in turns})
    return Overview(
        person=person,
        rows=kept[(page - 1) * PAGE_SIZE : page * PAGE_SIZE],
        scopes=[(s, scope_label(s)) for s in scopes],
        platforms=platforms,
        total=len(kept),
        pages=pages,
        searched=bool(filters.q),
    )


def _admitted(filters: Filters, row: MemoryRow | MessageRow) -> bool:
    if isinstance(row, MemoryRow):
        m = row.memory
        return filters.admits(m.kind, m.visibility, row.platforms, m.valid_from)
    t = row.turn
    return filters.admits("message", t.visibility, {t.platform}, t.ts)


def owned(assistant: Assistant, person_id: str, memory_ids: list[str], turn_ids: list[str]):
    """The person's own memories and turns among these ids, and whether every id was theirs."""
    store = assistant.store
    store.settle_turns_of(person_id)
    mine = {m.id: m for m in store.memories_of(person_id, current_only=False)}
    memories = [mine[i] for i in memory_ids if i in mine]
    turns = [t for t in store.turns_by_ids(turn_ids) if t.person_id == person_id]
    complete = len(memories) == len(set(memory_ids)) and len(turns) == len(set(turn_ids))
    return memories, turns, complete
