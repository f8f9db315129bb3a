"""A learned second look at recall's top candidates: a logistic model over cheap features.

Reciprocal rank fusion adds the ranks of the lists a candidate appears in and nothing else: it
cannot tell that a turn sharing two rare words with the question beats one sharing a common
word, that a short "yes!" is rarely evidence on its own, or that "when" questions want a turn
whose reply sits next to it. A cross-encoder would, but no package on the index was found
that ships one's weights (a pip package is the only way a model may arrive here; FlashRank,
for one, downloads them on first use), so the model is a logistic regression over features
recall already has (ranks and scores from both lists, how much of the question a turn and its
neighbours cover, who said it, its length), trained by bench/train_rerank.py on REALTALK's
development chats (the held-out chats never seen). Its weights are the constants below: a dot
product per candidate; the whole step costs ~1.6 ms CPU (p50; 4.8 ms for a person with 100k
turns), well inside the 50 ms the recall budget grants a reranker.

Fusion weights can be learned per question type ("when", "would/why", the rest, told from the
question's words alone); measured, one model for all did better on unseen chats, so one is used.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core.memory.textindex import analyse, analyse_many

# Name of each feature, in the order of the weights (the bias first).
FEATURES = (
    "bias",
    "fused",  # the fused score, scaled so that a first rank in one list is 1
    "cosine",  # the turn's cosine to the question
    "bm25",  # its best BM25 over the text lists, over the best of all candidates
    "vector_rank",  # 1 / (1 + rank) in the best vector list, 0 when absent
    "text_rank",  # the same for the text lists
    "coverage",  # share of the question's terms the turn holds
    "near_coverage",  # share the turn and its neighbours hold together
    "near_fused",  # best fused score among its neighbours that are candidates too
    "question",  # the turn asks something
    "short",  # 1 / number of terms: "yes!" is rarely evidence alone
    "speaker",  # said by a speaker the question names
    "in_span",  # said within the time the question asks about
)
TYPES = ("fact", "time", "inference")
_TIME = re.compile(r"\b(when|what (day|date|time|month|year|week)|how long|since when)\b", re.IGNORECASE)
_INFERENCE = re.compile(
    r"\b(would|likely|might|why|probably|could|think|suppose|prefer|consider|infer)\b", re.IGNORECASE
)

# Learned weights (bench/train_rerank.py): per question type, or "all" for the types without
# their own; None: fused order, unchanged. One model for all types: per-type models did worse
# on the chats they were not fitted on (leave-one-chat-out R@10 0.638 vs 0.643). `in_span` is
# left out (weight 0, `--drop in_span`): REALTALK taught it a negative weight that sank the
# answers to "where did I live before I moved" on the synthetic set, and without it the
# development chats do as well (0.648). Trained with `--drop in_span`; adding generated
# conversations (`--synthetic-seed 1`) did not help either set (synthetic R@10 0.912).
# Tried and left out: the question's cosine to a turn's whole window and to its best
# neighbour, the best cosine and the share of candidates from the same day in the same chat, and
# the turn's length added 0.008 R@10 on the development chats (leave one chat out) and nothing
# that held on the held-out chats (0.673 against 0.677) or the synthetic set (0.912 / 0.916).
WEIGHTS: dict[str, tuple[float, ...]] | None = {
    "all": (
        -6.8232,
        0.2084,
        1.1054,
        1.0071,
        0.9517,
        1.5767,
        -0.0464,
        1.9913,
        0.0779,
        -0.4613,
        -5.9164,
        1.9113,
        0.0000,
    ),
}
# bench/train_rerank.py collects (question, features, cites) here; None in use
TRACE: list[tuple[str, np.ndarray, list[tuple[str, ...]]]] | None = None


def weights_for(weights: Mapping[str, Sequence[float]], question: str) -> np.ndarray:
    """The weights for this question's type, else the shared ones."""
    kind = question_type(question)
    return np.asarray(weights[kind] if kind in weights else weights["all"], dtype=np.float64)


def question_type(text: str) -> str:
    """fact, time or inference, from the question's words (the eval's labels are not known here)."""
    if _TIME.search(text):
        return "time"
    if _INFERENCE.search(text):
        return "inference"
    return "fact"


@dataclass
class Signals:
    """What recall knows about one candidate before the model looks at it."""

    fused: float
    cosine: float
    bm25: float = 0.0
    vector_rank: int | None = None
    text_rank: int | None = None
    text: str = ""
    neighbours: Sequence[str] = ()
    neighbour_fused: float = 0.0
    speaker: bool = False
    in_span: bool = False
    cites: tuple[str, ...] = ()  # the ids recall would cite for it (its own, its neighbours')


def features(query_text: str, signals: Sequence[Signals]) -> np.ndarray:
    """One row of FEATURES per candidate."""
    terms = set(analyse(query_text))
    texts = [s.text for s in signals]
    own = analyse_many(texts)
    around = analyse_many([" ".join(s.neighbours) for s in signals])
    best_bm25 = max((s.bm25 for s in signals), default=0.0) or 1.0
    rows = np.zeros((len(signals), len(FEATURES)), dtype=np.float64)
    for i, s in enumerate(signals):
        mine = set(own[i])
        near = mine | set(around[i])
        rows[i] = (
            1.0,
            s.fused,
            s.cosine,
            s.bm25 / best_bm25,
            0.0 if s.vector_rank is None else 1.0 / (1 + s.vector_rank),
            0.0 if s.text_rank is None else 1.0 / (1 + s.text_rank),
            len(terms & mine) / len(terms) if terms else 0.0,
            len(terms & near) / len(terms) if terms else 0.0,
            s.neighbour_fused,
            1.0 if s.text.rstrip().endswith("?") else 0.0,
            1.0 / (1 + len(own[i])),
            1.0 if s.speaker else 0.0,
            1.0 if s.in_span else 0.0,
        )
    return rows


def scores(
    question: str,
    terms_text: str,
    signals: Sequence[Signals],
    weights: Mapping[str, Sequence[float]] | None = None,
) -> np.ndarray | None:
    """The model's probability that each candidate is (or brings) evidence; None when no model
    is set, so recall keeps its fused order. `question` picks the weights; `terms_text` is the
    question less the names and time phrase recall took out of it."""
    weights = WEIGHTS if weights is None else weights
    if not signals:
        return None
    x = features(terms_text, signals) if (weights or TRACE is not None) else None
    if TRACE is not None and x is not None:
        TRACE.append((question, x, [s.cites for s in signals]))
    if not weights or x is None:
        return None
    z = x @ weights_for(weights, question)
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def fit(x: np.ndarray, y: np.ndarray, *, l2: float = 1.0, steps: int = 50) -> np.ndarray:
    """Logistic regression by Newton's method (a few hundred rows per question type, 13
    features: exact in a dozen steps, no library needed). The bias is not penalised."""
    w = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        grad = x.T @ (p - y) + penalty * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if math.sqrt(float(step @ step)) < 1e-8:
            break
    return w
