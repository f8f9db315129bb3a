"""BM25 for the search cache: the same analysis as LanceDB's index, and the same ranking whether
rows sit in the bm25s index, in the postings tail, or were re-indexed after a removal."""

from __future__ import annotations

import numpy as np
import pytest

from core.memory import textindex
from core.memory.textindex import TextIndex, analyse

DOCS = [
    "I adopted a grey cat called Pixel",
    "My sister Marta moved to Utrecht",
    "The Zephyrine rollout is due at the end of the quarter",
    "We had pho at Saigon Corner",
    "The cat knocked the plant over again",
    "Training for the Berlin marathon, 30 km today",
    "Café Müller has the best cakes",
    "Meeting about the Zephyrine budget moved to Monday",
] * 5


def test_analysis_folds_stems_and_drops_stop_words() -> None:
    assert analyse("What is my cat CALLED?") == ["cat", "call"]
    assert analyse("Café Müller") == ["cafe", "muller"]
    assert analyse("running marathons") == ["run", "marathon"]
    assert analyse("") == []


def ranking(index: TextIndex, query: str) -> list[int]:
    scores = index.scores(analyse(query))
    return [int(i) for i in np.argsort(-scores, kind="stable") if scores[i] > 0]


@pytest.mark.parametrize("query", ["zephyrine budget", "cat", "cafe cakes", "marathon training"])
def test_index_tail_and_rebuild_rank_alike(monkeypatch, query: str) -> None:
    small = TextIndex()
    small.add(DOCS)  # postings only (few rows)
    monkeypatch.setattr(textindex, "BASE_MIN", 10)
    monkeypatch.setattr(textindex, "TAIL_MIN", 1000)
    built = TextIndex()
    built.add(DOCS[:20])
    built.prepare()  # a bm25s index over 20 rows ...
    built.add(DOCS[20:])  # ... and 20 in the tail
    assert built._base is not None and built._base_rows == 20
    whole = TextIndex()
    whole.add(DOCS)
    whole.prepare()
    want = ranking(whole, query)
    assert want
    assert set(ranking(built, query)) == set(want) == set(ranking(small, query))
    # the best-scoring text is the same everywhere (its copies tie)
    for index in (built, small):
        assert DOCS[ranking(index, query)[0]] == DOCS[want[0]]


def test_removed_rows_leave_the_scores() -> None:
    index = TextIndex()
    index.add(DOCS)
    keep = np.array([not d.startswith("The cat") for d in DOCS])
    index.keep(keep)
    scores = index.scores(analyse("cat plant"))
    assert len(scores) == keep.sum()
    kept = [d for d, k in zip(DOCS, keep, strict=True) if k]
    assert all(("plant" not in d) for d, s in zip(kept, scores, strict=True) if s > 0)
    assert {kept[i] for i in np.flatnonzero(scores)} == {"I adopted a grey cat called Pixel"}
