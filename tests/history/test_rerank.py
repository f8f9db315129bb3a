"""The learned reranker and the second hop: what they read and what they change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from core.memory import recall as recall_module
from core.memory import rerank
from core.memory.expand import entities, hop_terms
from core.memory.importers import import_history
from core.memory.recall import ChatContext, Recall
from core.memory.records import Person
from core.memory.store import Store
from tests.history.test_recall_context import write_jsonl

T0 = datetime(2024, 3, 4, 18, 0, tzinfo=UTC)
DM = ChatContext("console", "x", "direct")


def ask(store: Store, question: str, k: int = 5):
    recall = Recall(store, lambda s: len(s) // 4 + 1)
    [vector] = store.embed([question])
    person = store.person("mo")
    assert person is not None
    return recall.recall(
        person, DM, vector, k=k, budget_tokens=100_000, query_text=question, now=T0 + timedelta(days=9)
    )


@pytest.fixture
def chat(tmp_path: Path, store: Store) -> Store:
    m = timedelta(minutes=1)
    rows = [
        ("a1", "Mo", "We finally booked the trip to Lisbon", T0, "dm"),
        ("a2", "Ana", "Nice! Where are you staying?", T0 + m, "dm"),
        ("a3", "Mo", "A small hostel near Alfama", T0 + 2 * m, "dm"),
        (
            "b1",
            "Mo",
            "Alfama was loud at night, we moved to Belem after two days",
            T0 + timedelta(days=3),
            "dm",
        ),
        ("c1", "Ana", "Did you watch the match yesterday?", T0 + timedelta(days=4), "dm"),
        ("c2", "Mo", "yes!", T0 + timedelta(days=4, minutes=1), "dm"),
        (
            "d1",
            "Mo",
            "Trip planning is stressful, I keep booking and cancelling",
            T0 + timedelta(days=5),
            "dm",
        ),
    ]
    store.save_person(Person(person_id="mo"))
    import_history(store, write_jsonl(tmp_path / "h.jsonl", rows), "mo", me="Mo", fmt="jsonl")
    return store


def test_question_types_come_from_the_words() -> None:
    assert rerank.question_type("When did Mo move to Belem?") == "time"
    assert rerank.question_type("Why would Mo avoid hostels?") == "inference"
    assert rerank.question_type("Where did Mo stay in Lisbon?") == "fact"


def test_fit_learns_which_feature_tells() -> None:
    rng = np.random.default_rng(0)
    x = np.column_stack([np.ones(400), rng.normal(size=400), rng.normal(size=400)])
    y = (x[:, 1] + 0.1 * rng.normal(size=400) > 0).astype(float)
    w = rerank.fit(x, y, l2=0.1)
    assert w[1] > 2.0 and abs(w[2]) < 0.5 * w[1]


def test_the_trace_sees_every_top_candidate_with_what_recall_would_cite(
    chat: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace: list = []
    monkeypatch.setattr(rerank, "TRACE", trace)
    ask(chat, "Where did Mo stay in Lisbon?")
    [(question, x, cites)] = trace
    assert question == "Where did Mo stay in Lisbon?"
    assert x.shape == (len(cites), len(rerank.FEATURES))
    assert ("a2", "a1", "a3") in cites  # a turn, then its neighbours before and after
    row = x[cites.index(("a1", "a2"))]
    # "Mo" left the query (the speaker); of "stay" and "Lisbon" a1 holds one, its reply the other
    assert row[rerank.FEATURES.index("coverage")] == 0.5
    assert row[rerank.FEATURES.index("near_coverage")] == 1.0
    assert row[rerank.FEATURES.index("speaker")] == 1.0


def test_learned_weights_reorder_the_candidates(chat: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rerank, "WEIGHTS", None)
    fused = [i.source_ids[0] for i in ask(chat, "Which trip did Mo book?")]
    # a model that only trusts short turns puts "yes!" first, whatever fusion thought
    only_short = tuple(30.0 if f == "short" else 0.0 for f in rerank.FEATURES)
    monkeypatch.setattr(rerank, "WEIGHTS", dict.fromkeys(rerank.TYPES, only_short))
    reranked = [i.source_ids[0] for i in ask(chat, "Which trip did Mo book?")]
    assert fused[0] != "c2" and reranked[0] == "c2"
    items = ask(chat, "Which trip did Mo book?")
    assert all(0.0 < i.score <= 1.0 for i in items)  # probabilities


def test_second_hop_follows_the_names_of_the_first(chat: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "Alfama" in entities("A small hostel near Alfama")
    assert "alfama" in hop_terms("Where did Mo stay in Lisbon?", ["A small hostel near Alfama"]).lower()
    monkeypatch.setattr(rerank, "WEIGHTS", None)  # the fused order, where the hop's list counts
    monkeypatch.setattr(recall_module, "HOP_FROM", 1)
    monkeypatch.setattr(recall_module, "NEIGHBOURS_BEFORE", 0)
    monkeypatch.setattr(recall_module, "NEIGHBOURS_AFTER", 0)
    question = "hostel"
    without = [i.source_ids[0] for i in ask(chat, question, k=2)]
    monkeypatch.setattr(recall_module, "HOP_WEIGHT", 1.0)
    with_hop = [i.source_ids[0] for i in ask(chat, question, k=2)]
    assert without[0] == with_hop[0] == "a3"
    # b1 shares no word with "hostel" but names Alfama, as a3 does
    assert "b1" in with_hop and "b1" not in without


def test_a_turn_already_brought_as_a_neighbour_is_not_listed_again(
    chat: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def repeats(items) -> list[str]:
        brought: set[str] = set()
        out = []
        for item in items:
            if item.source_ids[0] in brought:
                out.append(item.source_ids[0])
            brought.update(item.source_ids[1:])
        return out

    question = "Where did Mo stay on the trip to Lisbon?"
    monkeypatch.setattr(rerank, "WEIGHTS", None)
    assert repeats(ask(chat, question, k=6))  # fused order alone lists a3 after a2 brought it
    flat = tuple(1.0 if f in ("bias", "fused") else 0.0 for f in rerank.FEATURES)
    monkeypatch.setattr(rerank, "WEIGHTS", {"all": flat})
    items = ask(chat, question, k=6)
    assert items and not repeats(items)
    assert {"a1", "a2", "a3"} <= {s for i in items for s in i.source_ids}  # the exchange is all there
