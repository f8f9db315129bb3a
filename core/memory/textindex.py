"""BM25 over one person's rows, in memory, for the search cache (core/memory/hot.py).

Why not LanceDB's full-text index here: each of its queries costs 5-20 ms of fixed work (and
a message needs two to four), while one person's rows fit in memory and `bm25s` scores all of
them in about a millisecond. Text is analysed the way the LanceDB index analyses it (lower
case, accents folded, English stop words dropped, Snowball English stems), so the two agree
on what matches.

`bm25s` builds a static index, and building one costs seconds for 100k rows, so rows added
after the build (a conversation's new turns) form a small tail that is scored with the same
library's BM25 formulas against the same corpus statistics; the index is rebuilt when the tail
has grown to a fraction of it, or after rows were removed.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Sequence

import bm25s
import numpy as np
import Stemmer
from bm25s.scoring import _select_idf_scorer, _select_tfc_scorer
from bm25s.stopwords import STOPWORDS_EN_PLUS

_WORD = re.compile(r"\w\w+")
_STOP = frozenset(STOPWORDS_EN_PLUS)  # the NLTK list, close to the one LanceDB uses
# NFKD splits "é" into "e" + a combining accent; this table deletes the accents (C speed).
_COMBINING = {c: None for c in range(0x20000) if unicodedata.combining(chr(c))}
METHOD = "lucene"  # bm25s's default, and the BM25 Lucene (and so LanceDB's tantivy) uses
K1, B = 1.2, 0.75  # Lucene's defaults
TAIL_MIN = 256  # rows added since the build scored as a tail before a rebuild is due...
TAIL_FRACTION = 0.25  # ...or this fraction of the indexed rows, whichever is more

_local = threading.local()


def _stemmer() -> Stemmer.Stemmer:
    """PyStemmer objects are not thread-safe: one per thread."""
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = Stemmer.Stemmer("english")
    return stemmer


def _words(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKD", text.lower()).translate(_COMBINING)
    return [w for w in _WORD.findall(folded) if w not in _STOP]


def analyse(text: str) -> list[str]:
    """The terms of a text: folded, lower-cased words of 2+ characters, stop words out, stemmed."""
    return _stemmer().stemWords(_words(text))


def analyse_many(texts: Sequence[str]) -> list[list[str]]:
    """`analyse` for many texts, with one call into the stemmer for all their words."""
    words = [_words(t or "") for t in texts]
    stems = iter(_stemmer().stemWords([w for ws in words for w in ws]))
    return [[next(stems) for _ in ws] for ws in words]


class TextIndex:
    """BM25 scores of a query against rows 0..n-1 (the row order of the owning cache entry)."""

    def __init__(self) -> None:
        self._vocab: dict[str, int] = {}
        self._docs: list[np.ndarray] = []  # term ids per row
        self._doc_bytes = 0
        self._base: bm25s.BM25 | None = None
        self._base_rows = 0
        self._base_df = np.zeros(0, dtype=np.int64)
        self._base_avg = 1.0
        # rows added since the build: term -> [(tail row, count)], and their lengths
        self._tail: dict[int, list[tuple[int, int]]] = {}
        self._tail_lengths: list[int] = []
        self._idf = _select_idf_scorer(METHOD)
        self._tfc = _select_tfc_scorer(METHOD)

    def __len__(self) -> int:
        return len(self._docs)

    @property
    def nbytes(self) -> int:
        docs = self._doc_bytes + 112 * len(self._docs)
        built = getattr(self._base, "scores", None) or {}  # an empty corpus builds nothing
        base = sum(built[k].nbytes for k in ("data", "indices", "indptr") if k in built)
        return docs + base + 80 * len(self._vocab)

    def add(self, texts: Sequence[str]) -> None:
        """Append rows (their order continues the entry's)."""
        vocab = self._vocab
        for terms in analyse_many(texts):
            ids = np.array([vocab.setdefault(t, len(vocab)) for t in terms], dtype=np.int32)
            self._docs.append(ids)
            self._doc_bytes += ids.nbytes
            if self._base is not None:
                row = len(self._tail_lengths)
                for term, count in Counter(ids.tolist()).items():
                    self._tail.setdefault(term, []).append((row, count))
                self._tail_lengths.append(len(ids))

    def keep(self, mask: np.ndarray) -> None:
        """Keep only the rows where `mask` is true (the entry removed the others)."""
        self._docs = [d for d, k in zip(self._docs, mask, strict=True) if k]
        self._doc_bytes = sum(d.nbytes for d in self._docs)
        self._base = None  # row positions moved: rebuilt on the next query
        self._tail, self._tail_lengths = {}, []

    def _rebuild(self) -> None:
        base = bm25s.BM25(method=METHOD, k1=K1, b=B)
        if self._docs:
            docs = [d.tolist() for d in self._docs]
            vocab = {t: t for t in range(len(self._vocab))} or {0: 0}
            base.index((docs, vocab), show_progress=False, create_empty_token=False)
            indptr = base.scores["indptr"]
            self._base_df = np.diff(indptr).astype(np.int64)
            self._base_avg = max(1.0, float(np.mean([len(d) for d in self._docs])))
        self._base = base
        self._base_rows = len(self._docs)
        self._tail, self._tail_lengths = {}, []

    def _due(self) -> bool:
        if self._base is None:
            return True
        return self._tail_rows > max(TAIL_MIN, int(self._base_rows * TAIL_FRACTION))

    @property
    def _tail_rows(self) -> int:
        return len(self._tail_lengths)

    def prepare(self) -> None:
        """Build the index now (a loader thread), not in the first query."""
        if self._due():
            self._rebuild()

    def scores(self, terms: Sequence[str]) -> np.ndarray:
        """BM25 of every row for these (analysed) terms; 0 where no term occurs."""
        if self._due():
            self._rebuild()
        out = np.zeros(len(self._docs), dtype=np.float32)
        ids = [self._vocab[t] for t in terms if t in self._vocab]
        if not ids:
            return out
        assert self._base is not None
        in_base = [i for i in ids if i < len(self._base_df)]
        if self._base_rows and in_base:
            out[: self._base_rows] = self._base.get_scores_from_ids(in_base)
        if self._tail_rows:
            out[self._base_rows :] = self._tail_scores(ids)
        return out

    def _tail_scores(self, ids: list[int]) -> np.ndarray:
        """The tail's rows scored with the library's BM25 parts, against the whole corpus."""
        n = self._base_rows + self._tail_rows
        scores = np.zeros(self._tail_rows, dtype=np.float32)
        lengths = np.asarray(self._tail_lengths, dtype=np.float32)
        for term in ids:
            postings = self._tail.get(term)
            if not postings:
                continue
            df = (int(self._base_df[term]) if term < len(self._base_df) else 0) + len(postings)
            rows = np.fromiter((r for r, _ in postings), dtype=np.int64, count=len(postings))
            tf = np.fromiter((c for _, c in postings), dtype=np.float32, count=len(postings))
            tfc = self._tfc(tf_array=tf, l_d=lengths[rows], l_avg=self._base_avg, k1=K1, b=B)
            scores[rows] += self._idf(df, N=n) * tfc
        return scores
