"""BM25 over one person's rows, in memory, for the search cache (core/memory/hot.py).

Why not LanceDB's full-text index here: each of its queries costs 5-20 ms of fixed work (and
a message needs two to four), while one person's rows fit in memory and `bm25s` scores all of
them in about a millisecond. Text is analysed the way the LanceDB index analyses it (lower
case, accents folded, English stop words dropped, Snowball English stems), so the two agree
on what matches.

`bm25s` builds a static index, and building one costs seconds for 100k rows, so rows added
after the build (a conversation's new turns) form a small tail that is scored from postings
with the same library's BM25 formulas against the whole corpus's statistics; the index is
rebuilt when the tail has grown to a fraction of it, or after rows were removed. A person
with few rows has no index at all, only that tail (see TextIndex).
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
BASE_MIN = 2_000  # a person with more rows than this gets a bm25s index (fewer: postings)
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
    folded = text.lower()
    if not folded.isascii():
        folded = unicodedata.normalize("NFKD", folded).translate(_COMBINING)
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
    """BM25 scores of a query against rows 0..n-1 (the row order of the owning cache entry).

    Rows 0..base-1 are in a `bm25s` index; the rest (all rows of a small person, the rows
    added since the build of a big one) are kept as postings and scored with the library's BM25
    formulas: building a `bm25s` index costs ~20 us a row in Python, which a person's first
    message should not pay for a few hundred rows.
    """

    def __init__(self) -> None:
        self._vocab: dict[str, int] = {}
        self._docs: list[np.ndarray] = []  # term ids per row
        self._doc_bytes = 0
        self._total_terms = 0
        self._base: bm25s.BM25 | None = None
        self._base_rows = 0
        self._base_df = np.zeros(0, dtype=np.int64)
        self._base_avg = 1.0
        # rows past the base: term -> [(tail row, count)], and their lengths
        self._tail: dict[int, list[tuple[int, int]]] = {}
        self._tail_lengths: list[int] = []
        self._stale = False  # rows were removed: positions moved, everything is rebuilt
        self._idf = _select_idf_scorer(METHOD)
        self._tfc = _select_tfc_scorer(METHOD)

    def __len__(self) -> int:
        return len(self._docs)

    @property
    def nbytes(self) -> int:
        docs = self._doc_bytes + 112 * len(self._docs)
        built = getattr(self._base, "scores", None) or {}  # an empty corpus builds nothing
        base = sum(built[k].nbytes for k in ("data", "indices", "indptr") if k in built)
        return docs + base + 80 * len(self._vocab) + 24 * self._doc_bytes // 4

    def add(self, texts: Sequence[str]) -> None:
        """Append rows (their order continues the entry's)."""
        vocab = self._vocab
        for terms in analyse_many(texts):
            ids = np.array([vocab.setdefault(t, len(vocab)) for t in terms], dtype=np.int32)
            self._docs.append(ids)
            self._doc_bytes += ids.nbytes
            self._total_terms += len(ids)
            if not self._stale:
                self._post(ids)

    def _post(self, ids: np.ndarray) -> None:
        row = len(self._tail_lengths)
        for term, count in Counter(ids.tolist()).items():
            self._tail.setdefault(term, []).append((row, count))
        self._tail_lengths.append(len(ids))

    def keep(self, mask: np.ndarray) -> None:
        """Keep only the rows where `mask` is true (the entry removed the others)."""
        self._docs = [d for d, k in zip(self._docs, mask, strict=True) if k]
        self._doc_bytes = sum(d.nbytes for d in self._docs)
        self._total_terms = sum(len(d) for d in self._docs)
        self._stale = True
        self._base, self._base_rows, self._tail, self._tail_lengths = None, 0, {}, []

    def _build(self) -> None:
        """Every row into a `bm25s` index."""
        base = bm25s.BM25(method=METHOD, k1=K1, b=B)
        docs = [d.tolist() for d in self._docs]
        vocab = {t: t for t in range(len(self._vocab))} or {0: 0}
        base.index((docs, vocab), show_progress=False, create_empty_token=False)
        self._base_df = np.diff(base.scores["indptr"]).astype(np.int64)
        self._base_avg = max(1.0, self._total_terms / max(1, len(docs)))
        self._base, self._base_rows = base, len(docs)
        self._tail, self._tail_lengths = {}, []

    def prepare(self) -> None:
        """Bring the index up to date now (a loader thread), not in the next query."""
        if self._stale:
            self._stale = False
            if len(self._docs) > BASE_MIN:
                self._build()
            else:
                for ids in self._docs:
                    self._post(ids)
        elif self._build_due():
            self._build()

    def _build_due(self) -> bool:
        if self._base is None:
            return len(self._docs) > BASE_MIN
        return len(self._tail_lengths) > max(TAIL_MIN, int(self._base_rows * TAIL_FRACTION))

    def scores(self, terms: Sequence[str]) -> np.ndarray:
        """BM25 of every row for these (analysed) terms; 0 where no term occurs."""
        self.prepare()
        out = np.zeros(len(self._docs), dtype=np.float32)
        ids = [self._vocab[t] for t in terms if t in self._vocab]
        if not ids:
            return out
        in_base = [i for i in ids if i < len(self._base_df)]
        if self._base is not None and self._base_rows and in_base:
            out[: self._base_rows] = self._base.get_scores_from_ids(in_base)
        if self._tail_lengths:
            out[self._base_rows :] = self._tail_scores(ids)
        return out

    def _tail_scores(self, ids: list[int]) -> np.ndarray:
        """The rows past the base scored with the library's BM25 parts, against all rows."""
        n = len(self._docs)
        average = self._base_avg if self._base is not None else max(1.0, self._total_terms / max(1, n))
        scores = np.zeros(len(self._tail_lengths), dtype=np.float32)
        lengths = np.asarray(self._tail_lengths, dtype=np.float32)
        for term in ids:
            postings = self._tail.get(term)
            if not postings:
                continue
            df = (int(self._base_df[term]) if term < len(self._base_df) else 0) + len(postings)
            rows = np.fromiter((r for r, _ in postings), dtype=np.int64, count=len(postings))
            tf = np.fromiter((c for _, c in postings), dtype=np.float32, count=len(postings))
            tfc = self._tfc(tf_array=tf, l_d=lengths[rows], l_avg=average, k1=K1, b=B)
            scores[rows] += self._idf(df, N=n) * tfc
        return scores
