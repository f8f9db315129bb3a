"""Recall@5 and recall@10 of the evidence turns: pure vector, pure full-text, and hybrid recall.

The conversations and questions come from bench/data_gen.py (12 people, ~320 turns each over
nine months). All three methods see the same LanceDB store, the same scopes and the same
embedding; "vector" and "full-text" are the store's single searches, "hybrid" is
`Recall.recall` (fusion, time, recency, diversity) as the assistant runs it.

    python bench/retrieval_eval.py [--people 12] [--dir /tmp/retrieval-eval]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.data_gen import NOW, conversations  # noqa: E402
from bench.targets import Targets  # noqa: E402
from core.memory import recall as recall_module  # noqa: E402
from core.memory import rerank  # noqa: E402
from core.memory.embed import default_embedder  # noqa: E402
from core.memory.recall import RECALL_ROLES, ChatContext, Recall  # noqa: E402
from core.memory.records import PRIVATE, Person, Turn  # noqa: E402
from core.memory.store import Store  # noqa: E402

KS = (5, 10)


def build(store: Store, convs) -> None:
    if store.counts()["turns"] == sum(len(c.turns) for c in convs):
        return  # reusing --dir from an earlier run
    for conv in convs:
        store.add_turns(
            [
                Turn(
                    person_id=conv.person,
                    platform="eval",
                    chat_id=conv.person,
                    message_id=t.message_id,
                    role="user",
                    text=t.text,
                    ts=t.ts,
                )
                for t in conv.turns
            ]
        )
    store.ensure_indexes()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--no-rerank", action="store_true", help="fused order only (an ablation)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a recall constant")
    args = ap.parse_args()
    if args.no_rerank:
        rerank.WEIGHTS = None
    for setting in args.set:
        name, value = setting.split("=", 1)
        setattr(recall_module, name, type(getattr(recall_module, name))(float(value)))

    convs = conversations(args.people, args.seed)
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="retrieval-eval-"))
    embedder = default_embedder()
    t0 = time.perf_counter()
    store = Store(workdir / "db", embedder)
    build(store, convs)
    print(
        f"{len(convs)} people, {sum(len(c.turns) for c in convs)} turns, "
        f"{sum(len(c.questions) for c in convs)} questions; store built in {time.perf_counter() - t0:.0f} s"
    )
    recall = Recall(store, lambda s: len(s) // 4 + 1)
    chat = ChatContext("eval", "x", "direct")
    # method -> kind -> list of (recall@5, recall@10)
    scores: dict[str, dict[str, list[tuple[float, ...]]]] = defaultdict(lambda: defaultdict(list))
    for conv in convs:
        person = Person(person_id=conv.person)
        vectors = embedder.embed([q.text for q in conv.questions])
        for q, vec in zip(conv.questions, vectors, strict=True):
            common = {"visibilities": [PRIVATE], "k": max(KS), "roles": RECALL_ROLES}
            ranked = {
                "vector": [
                    h.item.source_id for h in store.search_vector("turns", conv.person, vec, **common)
                ],
                "full-text": [
                    h.item.source_id for h in store.search_text("turns", conv.person, q.text, **common)
                ],
                "hybrid": [
                    sid
                    for item in recall.recall(
                        person, chat, vec, k=max(KS), budget_tokens=1_000_000, query_text=q.text, now=NOW
                    )
                    for sid in item.source_ids[:1]
                ],
            }
            evidence = set(q.evidence)
            for method, ids in ranked.items():
                scores[method][q.kind].append(tuple(len(evidence & set(ids[:k])) / len(evidence) for k in KS))

    kinds = sorted({kind for per in scores.values() for kind in per})
    print(f"\n{'method':10} {'kind':8} {'n':>4} {'R@5':>6} {'R@10':>6}")
    overall: dict[str, float] = {}
    for method in ("vector", "full-text", "hybrid"):
        for kind in [*kinds, "all"]:
            rows = [r for kk in kinds for r in scores[method][kk]] if kind == "all" else scores[method][kind]
            r5 = sum(r[0] for r in rows) / len(rows)
            r10 = sum(r[1] for r in rows) / len(rows)
            print(f"{method:10} {kind:8} {len(rows):>4} {r5:>6.3f} {r10:>6.3f}")
            if kind == "all":
                overall[method] = round(r10, 3)
    targets = Targets("retrieval_eval targets (R@10, all questions)")
    for single in ("vector", "full-text"):  # fusion must not lose what a single search finds
        targets.check(f"hybrid R@10 vs {single}", overall["hybrid"], ">=", overall[single])
    if args.dir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    targets.exit()


if __name__ == "__main__":
    main()
