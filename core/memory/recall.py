"""What the model may be reminded of: this person's memories and turns that THIS chat may see.

Visibility is decided here, before ranking, from the chat the message came from, so nothing a
prompt says can widen it: a group sees the speaker's items scoped to that group (plus their
private profile only where they said `/share here`); a direct chat sees the person's own items.
The scopes go into every store query as a prefilter; ranking only ever sees allowed rows.

Ranking is hybrid because each half fails differently: embeddings miss rare words (a project's
code name, a street, a person's name) and full-text search misses paraphrase ("my sister" vs
"Marta"). Both lists, for turns and consolidated memories together, are fused by reciprocal
rank fusion, which needs no score calibration between BM25 and cosine. A question that names a
time ("last week", "in May", "before I moved") adds the same two searches restricted to that
span, so turns from then rise; one about the present ("where do I work now") favours the newest
of the candidates. A maximal-marginal-relevance pass then keeps ten results from being ten
paraphrases of one message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from core.memory.records import PRIVATE, Memory, Person, Turn, chat_scope
from core.memory.store import Hit, Store
from core.memory.when import When, around_anchor, asks_for_now, parse_when, without

RRF_K = 60  # the usual constant: ranks 1 and 2 differ a little, ranks 1 and 50 a lot
CANDIDATES = 40  # per list; fusion and diversity choose k from these
MEMORY_WEIGHT = 1.2  # a consolidated memory is worth a little more than one raw turn
SPAN_WEIGHT = 2.0  # lists restricted to the asked-about time count double
IN_SPAN_BONUS = 1.0 / RRF_K  # and any candidate from that time gets a first-rank bonus
RECENT_BONUS = 0.5 / RRF_K  # "now" questions: the newest candidate gets this, the oldest nothing
MMR_LAMBDA = 0.75  # relevance vs. novelty in the diversity step
NEAR_DUPLICATE = 0.93  # cosine above which a candidate only repeats a chosen one
RECALL_ROLES = ("user", "contact")  # what people said; the assistant's own words are not evidence

_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="recall")


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


@dataclass
class _Candidate:
    item: Turn | Memory
    vector: np.ndarray | None
    score: float = 0.0

    @property
    def ts(self) -> datetime:
        return self.item.ts if isinstance(self.item, Turn) else self.item.valid_from


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
        query_text: str | None = None,
        now: datetime | None = None,
    ) -> list[Recalled]:
        """The top items, best first, that fit in `budget_tokens`.

        Without `query_text` only the vector half runs (and no time is understood); `now` is
        the moment "last week" is counted from (default: the current time).
        """
        scopes = scopes if scopes is not None else visible_scopes(person, chat)
        exclude_ids = exclude_ids or set()
        if not scopes:
            return []
        when = parse_when(query_text, now) if query_text else None
        if when is not None and when.anchor:
            when = self._resolve_anchor(person.person_id, when, scopes)
        text = without(query_text, when.phrase) if (query_text and when) else query_text
        searches = self._searches(person.person_id, query_vector, text, scopes, when)
        candidates = self._fold_sources(self._fuse(searches, exclude_ids))
        if not candidates:
            return []
        if when is not None:
            for c in candidates.values():
                if when.contains(c.ts):
                    c.score += IN_SPAN_BONUS
        if query_text and asks_for_now(query_text):
            self._prefer_recent(list(candidates.values()))
        ranked = self._diverse(sorted(candidates.values(), key=lambda c: c.score, reverse=True), k * 3)
        return self._within_budget(self._to_recalled(ranked), k, budget_tokens)

    # -- the searches -------------------------------------------------------------------------

    def _searches(
        self,
        person_id: str,
        vector: Sequence[float],
        text: str | None,
        scopes: list[str],
        when: When | None,
    ) -> list[tuple[float, list[Hit]]]:
        """(weight, hits) per ranked list; the store queries run side by side."""
        jobs: list[tuple[float, Callable[[], list[Hit]]]] = []
        spans: list[tuple[float, datetime | None, datetime | None]] = [(1.0, None, None)]
        if when is not None and (when.start or when.end):
            spans.append((SPAN_WEIGHT, when.start, when.end))
        for weight, since, until in spans:
            for name in ("turns", "memories"):
                w = weight * (MEMORY_WEIGHT if name == "memories" else 1.0)
                common = {
                    "visibilities": scopes,
                    "k": CANDIDATES,
                    "since": since,
                    "until": until,
                    "roles": RECALL_ROLES,
                    "with_vectors": True,
                }
                jobs.append((w, lambda n=name, c=common: self.store.search_vector(n, person_id, vector, **c)))
                if text and text.strip():
                    jobs.append((w, lambda n=name, c=common: self.store.search_text(n, person_id, text, **c)))
        futures = [(w, _pool.submit(fn)) for w, fn in jobs]
        return [(w, fut.result()) for w, fut in futures]

    def _resolve_anchor(self, person_id: str, when: When, scopes: list[str]) -> When | None:
        """For "before I moved": find when the person said it, and count from there."""
        assert when.anchor is not None
        [vector] = self.store.embed([when.anchor])
        # an event is named by its rare words ("moved to Porto"): full text counts double here
        lists = [
            (
                1.0,
                self.store.search_vector(
                    "turns", person_id, vector, visibilities=scopes, k=10, roles=("user",)
                ),
            ),
            (
                2.0,
                self.store.search_text(
                    "turns", person_id, when.anchor, visibilities=scopes, k=10, roles=("user",)
                ),
            ),
        ]
        fused = self._fuse(lists, set())
        if not fused:
            return None
        best = max(fused.values(), key=lambda c: c.score)
        return around_anchor(when, best.ts)

    @staticmethod
    def _fuse(lists: list[tuple[float, list[Hit]]], exclude_ids: set[str]) -> dict[str, _Candidate]:
        """Reciprocal rank fusion: each list adds weight / (RRF_K + rank) to what it found."""
        fused: dict[str, _Candidate] = {}
        for weight, hits in lists:
            for rank, hit in enumerate(hits):
                if hit.item.id in exclude_ids:
                    continue
                candidate = fused.get(hit.item.id)
                if candidate is None:
                    vector = np.asarray(hit.vector, dtype=np.float32) if hit.vector is not None else None
                    candidate = fused[hit.item.id] = _Candidate(hit.item, vector)
                candidate.score += weight / (RRF_K + rank + 1)
        return fused

    @staticmethod
    def _fold_sources(candidates: dict[str, _Candidate]) -> dict[str, _Candidate]:
        """A memory stands for the turns it was built from: their evidence counts for the memory
        and they are not listed again beside it."""
        for c in list(candidates.values()):
            if isinstance(c.item, Memory):
                for source in c.item.source_turn_ids:
                    turn = candidates.pop(source, None)
                    if turn is not None:
                        c.score += turn.score
        return candidates

    @staticmethod
    def _prefer_recent(candidates: list[_Candidate]) -> None:
        by_age = sorted(candidates, key=lambda c: c.ts)
        if len(by_age) < 2:
            return
        for i, c in enumerate(by_age):
            c.score += RECENT_BONUS * i / (len(by_age) - 1)

    @staticmethod
    def _diverse(ranked: list[_Candidate], n: int) -> list[_Candidate]:
        """Maximal marginal relevance: each next pick is relevant and unlike those picked."""
        if not ranked:
            return []
        top = ranked[0].score or 1.0
        chosen: list[_Candidate] = []
        chosen_vectors: list[np.ndarray] = []
        pool = list(ranked)
        while pool and len(chosen) < n:
            best, best_value, best_sim = None, -np.inf, 0.0
            for c in pool:
                sim = (
                    max((float(c.vector @ v) for v in chosen_vectors), default=0.0)
                    if c.vector is not None
                    else 0.0
                )
                value = MMR_LAMBDA * (c.score / top) - (1 - MMR_LAMBDA) * sim
                if value > best_value:
                    best, best_value, best_sim = c, value, sim
            assert best is not None
            pool.remove(best)
            if best_sim >= NEAR_DUPLICATE:
                continue
            chosen.append(best)
            if best.vector is not None:
                chosen_vectors.append(best.vector)
        return chosen

    # -- results --------------------------------------------------------------------------------

    def _to_recalled(self, ranked: list[_Candidate]) -> list[Recalled]:
        memory_sources = {t for c in ranked if isinstance(c.item, Memory) for t in c.item.source_turn_ids}
        sources = self.store.source_ids_for(memory_sources) if memory_sources else {}
        out: list[Recalled] = []
        for c in ranked:
            item = c.item
            if isinstance(item, Turn):
                out.append(
                    Recalled(
                        text=item.text,
                        kind="turn",
                        score=c.score,
                        ts=item.ts,
                        source_ids=[item.source_id],
                        role=item.role,
                        id=item.id,
                    )
                )
            else:
                out.append(
                    Recalled(
                        text=item.text,
                        kind=item.kind,
                        score=c.score,
                        ts=item.valid_from,
                        source_ids=[sources.get(t, t) for t in item.source_turn_ids],
                        id=item.id,
                    )
                )
        return out

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
