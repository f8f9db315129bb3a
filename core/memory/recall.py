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

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from core.memory import rerank
from core.memory.expand import hop_terms, question_keys
from core.memory.records import PRIVATE, Memory, Person, Turn, chat_scope
from core.memory.store import Hit, Search, Store
from core.memory.when import When, around_anchor, asks_for_now, parse_when, without

# A memory absorbs a source turn unless the turn matches the query clearly better (cosine).
FOLD_MARGIN = 0.15
# A question the person asked tells little about them; what they stated does. Less so since a
# recalled question brings its answer along (the next turn, as a neighbour).
QUESTION_WEIGHT = 0.75
RRF_K = 60  # the usual constant: ranks 1 and 2 differ a little, ranks 1 and 50 a lot
CANDIDATES = 40  # per list; fusion and diversity choose k from these
# Per list when the learned reranker will order them. A wider pool raises what a perfect
# ordering could reach (REALTALK development, oracle@10 0.804 at 40 -> 0.894 at 100 -> 0.954 at
# 200) but not what the model reaches (R@10 0.641 / 0.647 / 0.643), and with more distractors it
# loses synthetic answers: the pool stays at 40 until the ordering is better (see
# bench/real_dialogue_eval.py).
RERANK_CANDIDATES = 40
MEMORY_WEIGHT = 1.2  # a consolidated memory is worth a little more than one raw turn
SPAN_WEIGHT = 2.0  # lists restricted to the asked-about time count double
IN_SPAN_BONUS = 1.0 / RRF_K  # and any candidate from that time gets a first-rank bonus
RECENT_BONUS = 0.5 / RRF_K  # "now" questions: the newest candidate gets this, the oldest nothing
MMR_LAMBDA = 0.75  # relevance vs. novelty in the diversity step
NEAR_DUPLICATE = 0.93  # cosine above which a candidate only repeats a chosen one
RECALL_ROLES = ("user", "contact")  # what people said; the assistant's own words are not evidence
# A recalled turn brings the turns said just before and after it in the same session: in real
# conversations the answer is often the reply to the turn that matches the question.
NEIGHBOURS_BEFORE, NEIGHBOURS_AFTER = 1, 1
# "What sports does Paola watch?": a speaker named in the question is who said it, not a word to
# match ("My name is Kevin" is no answer); their turns get this bonus, the name leaves the query.
SPEAKER_BONUS = 0.5 / RRF_K
# Second hop (core/memory/expand.py): the names and rare words of the best HOP_FROM turns are
# searched again, that list fused with this weight; 0 turns it off.
HOP_WEIGHT = 0.0
HOP_FROM = 3
# A consolidated memory is a key to the turns it was built from: the best MEMORY_SOURCES memories
# bring their source turns the searches missed into the candidates, at this share of the
# memory's score (0 turns it off), so the reranker can weigh the turn with its context
# (REALTALK development with rule-extracted memories: R@10 0.631 -> 0.632, as good as neutral).
SOURCE_SHARE = 0.5
MEMORY_SOURCES = 10
# Memories only as keys (an ablation): a memory hit adds its whole score to its source turns
# and is not ranked itself, so a short extracted fact never takes a turn's place.
MEMORY_AS_KEY = False
RERANK_TOP = 60  # candidates the learned reranker rescores, by fused score; the rest stay behind
RERANK_BLEND = 1.0  # 1: the model's order; below, mixed with the fused score (an ablation)
# Query expansion: the question's names alone, as one more full-text list with this weight.
KEYS_WEIGHT = 0.0
_NAME = re.compile(r"\b(\w[\w-]*)(?:'s|’s)?\b")


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
    """One recalled item. `source_ids` are the ids the evidence had on its platform or in its
    import file; for a memory they are looked up (all of one recall's at once) only when first
    read: a prompt never cites them, the CLI does."""

    text: str
    kind: str  # memory kind, or "turn"
    score: float
    ts: datetime
    raw_source_ids: list[str] = field(default_factory=list, repr=False)  # a memory's: turn ids until read
    role: str = "user"
    id: str = ""
    context: list[str] = field(default_factory=list)  # a turn's neighbours, in order (not itself)
    _citations: _Citations | None = field(default=None, repr=False, compare=False)

    @property
    def source_ids(self) -> list[str]:
        if self._citations is not None:
            self._citations.resolve()
        return self.raw_source_ids


class _Citations:
    """Maps the memories of one recall from internal turn ids to platform ids, once."""

    def __init__(self, store: Store, items: list[Recalled], known: dict[str, str]) -> None:
        self.store, self.items, self.known = store, items, known

    def resolve(self) -> None:
        missing = {t for i in self.items for t in i.raw_source_ids if t not in self.known}
        sources = {**self.known, **(self.store.source_ids_for(missing) if missing else {})}
        for item in self.items:
            item.raw_source_ids = [sources.get(t, t) for t in item.raw_source_ids]
            item._citations = None


def named_speakers(person: Person, text: str) -> dict[str, bool]:
    """The speakers a question names: name -> whether it is the person (their own turns carry
    no name; others' are stored as "Name: text")."""
    mine = {n.lower() for n in (person.display_name, *person.settings.names) if n}
    others = {n.lower() for n in person.settings.contacts}
    named: dict[str, bool] = {}
    for m in _NAME.finditer(text):
        word = m.group(1).lower()
        if word in mine or word in others:
            named[m.group(1)] = word in mine
    return named


def said_by(turn: Turn, name: str, mine: bool) -> bool:
    if mine:
        return turn.role == "user"
    return turn.role == "contact" and turn.text[: len(name) + 1].lower() == f"{name.lower()}:"


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
        anchored = when is not None and bool(when.anchor)
        if when is not None and when.anchor:
            when = self._resolve_anchor(person.person_id, when, scopes)
        text = without(query_text, when.phrase) if (query_text and when) else query_text
        named = named_speakers(person, text) if text else {}
        for name in named:
            text = re.sub(rf"\b{re.escape(name)}(?:'s|’s)?\b", " ", text or "", flags=re.IGNORECASE)
        # The model never saw a question about "now" or one counted from an event ("before I
        # moved"): those keep the fused order, where recency and the event's span rank
        # (synthetic set R@10 0.903 -> 0.916 with them left out of the reranker)
        learned = not anchored and not (query_text and asks_for_now(query_text))
        learned = learned and (rerank.WEIGHTS is not None or rerank.TRACE is not None)
        per_list = RERANK_CANDIDATES if learned else CANDIDATES
        searches = self._searches(person.person_id, query_vector, text, scopes, when, per_list)
        found = {h.item.id for _, hits, _ in searches for h in hits} | exclude_ids
        if MEMORY_AS_KEY:
            candidates = self._fuse(searches, exclude_ids)
            self._bring_sources(person.person_id, scopes, candidates, found - set(candidates), keys_only=True)
        else:
            candidates = self._fold_sources(
                self._fuse(searches, exclude_ids), np.asarray(query_vector, dtype=np.float32)
            )
            if SOURCE_SHARE:
                self._bring_sources(person.person_id, scopes, candidates, found)
        if not candidates:
            return []
        if HOP_WEIGHT and text and text.strip():
            self._second_hop(person.person_id, scopes, text, candidates, exclude_ids)
        if named and SPEAKER_BONUS:
            self._prefer_speakers(candidates, named)
        if when is not None:
            for c in candidates.values():
                if when.contains(c.ts):
                    c.score += IN_SPAN_BONUS
        for c in candidates.values():
            if isinstance(c.item, Turn) and c.item.text.rstrip().endswith("?"):
                c.score *= QUESTION_WEIGHT
        if query_text and asks_for_now(query_text):
            self._prefer_recent(list(candidates.values()))
        ordered = sorted(candidates.values(), key=lambda c: c.score, reverse=True)
        around: dict[str, list[Turn]] = {}
        if learned:
            ordered, around = self._rerank(
                person.person_id,
                scopes,
                query_text or "",
                text or "",
                ordered,
                searches,
                query_vector,
                named,
                when,
            )
        if around:
            # the model's order is kept (only repeats dropped): trading relevance for novelty
            # cost R@10 there (REALTALK development 0.645 -> 0.617 with MMR_LAMBDA 0.75)
            ranked = self._not_in_context(self._diverse(ordered, k * 3, relevance_only=True), around)
        else:
            ranked = self._diverse(ordered, k * 3)
        chosen = self._within_budget(self._to_recalled(ranked), k, budget_tokens)
        self._add_neighbours(person.person_id, scopes, chosen, {c.item.id: c.item for c in ranked}, around)
        seen = {
            h.item.id: h.item.source_id for _, hits, _ in searches for h in hits if isinstance(h.item, Turn)
        }
        return self._with_source_ids(chosen, seen)

    # -- the searches -------------------------------------------------------------------------

    def _searches(
        self,
        person_id: str,
        vector: Sequence[float],
        text: str | None,
        scopes: list[str],
        when: When | None,
        per_list: int = CANDIDATES,
    ) -> list[tuple[float, list[Hit], bool]]:
        """(weight, hits, whether full-text) per ranked list; the store runs them side by side
        in one batch."""
        weights: list[float] = []
        searches: list[Search] = []
        spans: list[tuple[float, datetime | None, datetime | None]] = [(1.0, None, None)]
        if when is not None and (when.start or when.end):
            spans.append((SPAN_WEIGHT, when.start, when.end))
        for weight, since, until in spans:
            for name in ("turns", "memories"):
                w = weight * (MEMORY_WEIGHT if name == "memories" else 1.0)
                common = {"since": since, "until": until, "roles": RECALL_ROLES, "with_vectors": True}
                weights.append(w)
                searches.append(Search(name, per_list, vector=vector, **common))
                if text and text.strip():
                    weights.append(w)
                    searches.append(Search(name, per_list, text=text, **common))
                keys = question_keys(text) if (KEYS_WEIGHT and text and since is None) else ""
                if keys and name == "turns":
                    weights.append(w * KEYS_WEIGHT)
                    searches.append(Search(name, per_list, text=keys, **common))
        found = self.store.search_many(person_id, scopes, searches)
        return [(w, hits, s.vector is None) for w, hits, s in zip(weights, found, searches, strict=True)]

    def _resolve_anchor(self, person_id: str, when: When, scopes: list[str]) -> When | None:
        """For "before I moved": find when the person said it, and count from there."""
        assert when.anchor is not None
        [vector] = self.store.embed([when.anchor])
        # an event is named by its rare words ("moved to Porto"): full text counts double here
        by_vector, by_text = self.store.search_many(
            person_id,
            scopes,
            [
                Search("turns", 10, vector=vector, roles=("user",)),
                Search("turns", 10, text=when.anchor, roles=("user",)),
            ],
        )
        fused = self._fuse([(1.0, by_vector, False), (2.0, by_text, True)], set())
        if not fused:
            return None
        best = max(fused.values(), key=lambda c: c.score)
        return around_anchor(when, best.ts)

    @staticmethod
    def _fuse(lists: list[tuple[float, list[Hit], bool]], exclude_ids: set[str]) -> dict[str, _Candidate]:
        """Reciprocal rank fusion: each list adds weight / (RRF_K + rank) to what it found."""
        fused: dict[str, _Candidate] = {}
        for weight, hits, _ in lists:
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
    def _fold_sources(candidates: dict[str, _Candidate], query: np.ndarray) -> dict[str, _Candidate]:
        """A memory stands for the turns it was built from: their evidence counts for the memory
        and they are not listed again beside it. Only where the memory matched at least as well
        as the turn: a memory built from one part of a turn ("Is called Dana") must not hide the
        part the question is about ("...training for the Berlin marathon")."""

        def closeness(c: _Candidate) -> float:
            return float(c.vector @ query) if c.vector is not None else 0.0

        for c in list(candidates.values()):
            if isinstance(c.item, Memory):
                for source in c.item.source_turn_ids:
                    turn = candidates.get(source)
                    if turn is not None and closeness(c) >= closeness(turn) - FOLD_MARGIN:
                        c.score += candidates.pop(source).score
        return candidates

    def _bring_sources(
        self,
        person_id: str,
        scopes: list[str],
        candidates: dict[str, _Candidate],
        found: set[str],
        *,
        keys_only: bool = False,
    ) -> None:
        """The source turns of the best memories join the candidates (those the searches
        `found` are there already, or folded into their memory, and excluded ones stay out). Only the person's own turns in a scope
        this chat may see, said by someone (not the assistant), as the searches would allow."""
        memories = sorted(
            (c for c in candidates.values() if isinstance(c.item, Memory)),
            key=lambda c: c.score,
            reverse=True,
        )[:MEMORY_SOURCES]
        wanted = {t: m for m in reversed(memories) for t in m.item.source_turn_ids if t not in found}
        allowed = set(scopes)
        for turn in self.store.turns_by_ids(wanted, with_vectors=True, settle=False) if wanted else []:
            memory = wanted[turn.id]
            if turn.person_id != person_id or turn.visibility not in allowed or turn.role not in RECALL_ROLES:
                continue
            vector = np.asarray(turn.vector, dtype=np.float32) if turn.vector is not None else None
            turn.vector = None
            candidates[turn.id] = _Candidate(turn, vector, 0.0 if keys_only else SOURCE_SHARE * memory.score)
        if keys_only:
            for c in [c for c in candidates.values() if isinstance(c.item, Memory)]:
                for t in c.item.source_turn_ids:
                    if t in candidates:
                        candidates[t].score += c.score
                del candidates[c.item.id]

    def _second_hop(
        self,
        person_id: str,
        scopes: list[str],
        text: str,
        candidates: dict[str, _Candidate],
        exclude_ids: set[str],
    ) -> None:
        """Search again with what the first hop's best turns name, and fuse that list in."""
        best = sorted(
            (c for c in candidates.values() if isinstance(c.item, Turn)), key=lambda c: c.score, reverse=True
        )[:HOP_FROM]
        terms = hop_terms(text, [c.item.text for c in best])
        if not terms:
            return
        [hits] = self.store.search_many(
            person_id,
            scopes,
            [Search("turns", CANDIDATES, text=terms, roles=RECALL_ROLES, with_vectors=True)],
        )
        for c_id, c in self._fuse([(HOP_WEIGHT, hits, True)], exclude_ids).items():
            if c_id in candidates:
                candidates[c_id].score += c.score
            else:
                candidates[c_id] = c

    def _rerank(
        self,
        person_id: str,
        scopes: list[str],
        question: str,
        terms_text: str,
        ordered: list[_Candidate],
        searches: list[tuple[float, list[Hit], bool]],
        query_vector: Sequence[float],
        named: dict[str, bool],
        when: When | None,
    ) -> tuple[list[_Candidate], dict[str, list[Turn]]]:
        """The top candidates in the learned model's order (core/memory/rerank.py), the rest
        behind them in fused order; and the neighbours read for it, which recall cites."""
        top, rest = ordered[:RERANK_TOP], ordered[RERANK_TOP:]
        turns = [c.item for c in top if isinstance(c.item, Turn)]
        around = self._neighbours(person_id, scopes, turns) if turns else {}
        best: dict[str, tuple[int | None, int | None, float]] = {}
        for _, hits, is_text in searches:
            for rank, hit in enumerate(hits):
                v, t, bm25 = best.get(hit.item.id, (None, None, 0.0))
                if is_text:
                    t = rank if t is None else min(t, rank)
                    bm25 = max(bm25, -hit.distance)
                else:
                    v = rank if v is None else min(v, rank)
                best[hit.item.id] = (v, t, bm25)
        query = np.asarray(query_vector, dtype=np.float32)
        fused = {c.item.id: c.score * RRF_K for c in ordered}
        signals = []
        for c in top:
            v, t, bm25 = best.get(c.item.id, (None, None, 0.0))
            near = around.get(c.item.id, [])
            item = c.item
            signals.append(
                rerank.Signals(
                    fused=c.score * RRF_K,
                    cosine=float(c.vector @ query) if c.vector is not None else 0.0,
                    bm25=bm25,
                    vector_rank=v,
                    text_rank=t,
                    text=item.text,
                    neighbours=[n.text for n in near],
                    neighbour_fused=max((fused.get(n.id, 0.0) for n in near), default=0.0),
                    speaker=isinstance(item, Turn) and any(said_by(item, n, m) for n, m in named.items()),
                    in_span=when is not None and when.contains(c.ts),
                    cites=(item.source_id, *(n.source_id for n in near))
                    if isinstance(item, Turn)
                    else tuple(item.source_turn_ids),
                )
            )
        p = rerank.scores(question, terms_text, signals)
        if p is None:
            return ordered, around
        if RERANK_BLEND < 1.0:  # the model's probability mixed with the fused score
            top_fused = max(c.score for c in top) or 1.0
            p = RERANK_BLEND * p / (p.max() or 1.0) + (1 - RERANK_BLEND) * np.array(
                [c.score / top_fused for c in top]
            )
        for c, score in zip(top, p, strict=True):
            c.score = float(score)
        floor = float(p.min()) if len(p) else 1.0
        high = rest[0].score if rest else 1.0
        for c in rest:
            c.score = 0.99 * floor * c.score / high
        return sorted(top, key=lambda c: c.score, reverse=True) + rest, around

    @staticmethod
    def _not_in_context(ranked: list[_Candidate], around: dict[str, list[Turn]]) -> list[_Candidate]:
        """A turn that a better one brings along as its neighbour is there already: listing it
        again would spend a place on one exchange twice (REALTALK development chats, reranked:
        R@10 0.619 -> 0.643 left in -> out, offline)."""
        kept: list[_Candidate] = []
        brought: set[str] = set()
        for c in ranked:
            if c.item.id in brought:
                continue
            kept.append(c)
            brought.update(n.id for n in around.get(c.item.id, []))
        return kept

    @staticmethod
    def _prefer_speakers(candidates: dict[str, _Candidate], named: dict[str, bool]) -> None:
        """Turns said by a speaker the question names rise (their neighbours come with them)."""
        for c in candidates.values():
            if isinstance(c.item, Turn) and any(said_by(c.item, name, mine) for name, mine in named.items()):
                c.score += SPEAKER_BONUS

    @staticmethod
    def _prefer_recent(candidates: list[_Candidate]) -> None:
        by_age = sorted(candidates, key=lambda c: c.ts)
        if len(by_age) < 2:
            return
        for i, c in enumerate(by_age):
            c.score += RECENT_BONUS * i / (len(by_age) - 1)

    @staticmethod
    def _diverse(ranked: list[_Candidate], n: int, *, relevance_only: bool = False) -> list[_Candidate]:
        """Maximal marginal relevance: each next pick is relevant and unlike those picked.

        Vectorised: each candidate's highest similarity to anything picked so far is kept in an
        array and raised with one matrix-vector product per pick (a loop of Python dot products
        over a few hundred candidates cost more than the searches themselves)."""
        if not ranked:
            return []
        top = ranked[0].score or 1.0
        dim = next((len(c.vector) for c in ranked if c.vector is not None), 0)
        has_vector = np.array([c.vector is not None for c in ranked])
        vectors = np.zeros((len(ranked), dim), dtype=np.float32)
        for i, c in enumerate(ranked):
            if c.vector is not None:
                vectors[i] = c.vector
        mmr = 1.0 if relevance_only else MMR_LAMBDA
        relevance = mmr * np.array([c.score for c in ranked], dtype=np.float64) / top
        # similarity to the closest pick; 0 until something with a vector is picked
        closest = np.full(len(ranked), -np.inf)
        open_ = np.ones(len(ranked), dtype=bool)
        chosen: list[_Candidate] = []
        any_chosen = False
        while open_.any() and len(chosen) < n:
            sim = np.where(has_vector, closest, 0.0) if any_chosen else np.zeros(len(ranked))
            value = np.where(open_, relevance - (1 - mmr) * sim, -np.inf)
            i = int(np.argmax(value))  # the first of equals, as the ranking had them
            open_[i] = False
            if sim[i] >= NEAR_DUPLICATE:
                continue
            chosen.append(ranked[i])
            if has_vector[i]:
                closest = np.maximum(closest, vectors @ vectors[i])
                any_chosen = True
        return chosen

    # -- results --------------------------------------------------------------------------------

    @staticmethod
    def _to_recalled(ranked: list[_Candidate]) -> list[Recalled]:
        """Memories keep their source turns' internal ids here; `_with_source_ids` arranges for
        the chosen ones to be mapped to platform ids."""
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
                        raw_source_ids=[item.source_id],
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
                        raw_source_ids=list(item.source_turn_ids),
                        id=item.id,
                    )
                )
        return out

    def _add_neighbours(
        self,
        person_id: str,
        scopes: list[str],
        items: list[Recalled],
        by_id: dict[str, Turn | Memory],
        known: dict[str, list[Turn]] | None = None,
    ) -> None:
        """Each chosen turn gets the turns around it (their ids cited after its own); `known`
        holds those the reranker read already."""
        known = known or {}
        turns = [t for i in items if i.kind == "turn" and isinstance(t := by_id.get(i.id), Turn)]
        if not turns or NEIGHBOURS_BEFORE + NEIGHBOURS_AFTER == 0:
            return
        missing = [t for t in turns if t.id not in known]
        around = dict(known)
        if missing:
            around.update(self._neighbours(person_id, scopes, missing))
        for item in items:
            for turn in around.get(item.id, []) if item.kind == "turn" else []:
                item.context.append(turn.text)
                item.raw_source_ids.append(turn.source_id)

    def _neighbours(self, person_id: str, scopes: list[str], turns: list[Turn]) -> dict[str, list[Turn]]:
        return self.store.neighbours(
            person_id, scopes, turns, before=NEIGHBOURS_BEFORE, after=NEIGHBOURS_AFTER, roles=RECALL_ROLES
        )

    def _with_source_ids(self, items: list[Recalled], known: dict[str, str]) -> list[Recalled]:
        """A memory cites the ids its source turns had on their platform: turns the searches
        returned are known already, the store is asked for the rest when they are first read."""
        memories = [i for i in items if i.kind != "turn"]
        if memories:
            citations = _Citations(self.store, memories, known)
            for item in memories:
                item._citations = citations
        return items

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
