"""What the model may be reminded of: this person's memories and turns that THIS chat may see.

Visibility is decided here, before ranking, from the chat the message came from, so nothing a
prompt says can widen it: a group sees the speaker's items scoped to that group (plus their
private profile only where they said `/share here`); a direct chat sees the person's own items.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from core.memory.records import PRIVATE, Memory, Person, Turn, chat_scope
from core.memory.store import Store

MEMORY_BOOST = 0.15


@dataclass(frozen=True)
class ChatContext:
    platform: str
    chat_id: str
    kind: str  # "direct" | "group"

    @property
    def scope(self) -> str:
        return PRIVATE if self.kind == "direct" else chat_scope(self.platform, self.chat_id)


@dataclass
class Recalled:
    text: str
    kind: str  # memory kind, or "turn"
    score: float
    ts: datetime
    source_ids: list[str] = field(default_factory=list)
    role: str = "user"
    id: str = ""


def visible_scopes(person: Person, chat: ChatContext) -> list[str]:
    """The visibilities that may reach a prompt in `chat`."""
    if chat.kind == "direct":
        return [PRIVATE]
    scopes = [chat.scope]
    if chat.scope in person.settings.shared_chats:
        scopes.append(PRIVATE)
    return scopes


def _from_turn(turn: Turn, score: float) -> Recalled:
    return Recalled(
        text=turn.text,
        kind="turn",
        score=score,
        ts=turn.ts,
        source_ids=[turn.source_id],
        role=turn.role,
        id=turn.id,
    )


def _from_memory(memory: Memory, score: float, source_ids: list[str]) -> Recalled:
    return Recalled(
        text=memory.text,
        kind=memory.kind,
        score=score,
        ts=memory.valid_from,
        source_ids=source_ids,
        id=memory.id,
    )


class Recall:
    def __init__(self, store: Store, count_tokens: Callable[[str], int]) -> None:
        self.store = store
        self.count_tokens = count_tokens

    def recall(
        self,
        person: Person,
        chat: ChatContext,
        query_vector: Sequence[float],
        *,
        k: int = 8,
        budget_tokens: int = 400,
        exclude_ids: set[str] | None = None,
        scopes: list[str] | None = None,
    ) -> list[Recalled]:
        """The top items, best first, that fit in `budget_tokens`."""
        scopes = scopes if scopes is not None else visible_scopes(person, chat)
        exclude_ids = exclude_ids or set()
        items: list[Recalled] = []
        for hit in self.store.search("memories", person.person_id, query_vector, visibilities=scopes, k=k):
            memory = hit.item
            sources = self._source_ids(memory)
            items.append(_from_memory(memory, 1.0 - hit.distance + MEMORY_BOOST, sources))
        for hit in self.store.search("turns", person.person_id, query_vector, visibilities=scopes, k=k * 2):
            turn = hit.item
            if turn.id in exclude_ids or turn.role != "user":
                continue
            items.append(_from_turn(turn, 1.0 - hit.distance))
        items.sort(key=lambda r: r.score, reverse=True)
        return self._within_budget(items, k, budget_tokens)

    def _source_ids(self, memory: Memory) -> list[str]:
        turns = self.store.turns_by_ids(memory.source_turn_ids)
        by_id = {t.id: t.source_id for t in turns}
        return [by_id.get(t, t) for t in memory.source_turn_ids]

    def _within_budget(self, items: list[Recalled], k: int, budget: int) -> list[Recalled]:
        chosen: list[Recalled] = []
        seen: set[str] = set()
        used = 0
        for item in items:
            key = item.text.strip().lower()
            if key in seen:
                continue
            cost = self.count_tokens(item.text) + 8
            if used + cost > budget:
                continue
            chosen.append(item)
            seen.add(key)
            used += cost
            if len(chosen) >= k:
                break
        return chosen
