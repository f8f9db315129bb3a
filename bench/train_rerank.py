"""Train recall's reranker (core/memory/rerank.py) on REALTALK's development chats.

Each development question is asked through the same import and recall as
bench/real_dialogue_eval.py, with recall's top candidates and their features recorded
(`rerank.TRACE`). A candidate is positive when a turn recall would cite for it (itself or a
neighbour) is evidence. One logistic model per question type is fitted; leave-one-chat-out
cross-validation says what the model would do on a chat it has not seen (recall@10 of the cited
evidence among the rescored candidates, against their fused order), and the weights fitted on
all seven chats are printed for rerank.WEIGHTS. The held-out chats 8-10 are never read here.

    python bench/train_rerank.py [--dump /tmp/rerank.pkl] [--l2 1.0]
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.cli import _recall_items  # noqa: E402
from bench.data_gen import NOW, conversations  # noqa: E402
from bench.real_dialogue_eval import chat_files, consolidate, load_chat  # noqa: E402
from bench.retrieval_eval import build  # noqa: E402
from core.memory import recall as recall_module  # noqa: E402
from core.memory import rerank  # noqa: E402
from core.memory.embed import default_embedder  # noqa: E402
from core.memory.importers import import_history  # noqa: E402
from core.memory.recall import ChatContext, Recall  # noqa: E402
from core.memory.records import Person  # noqa: E402
from core.memory.store import Store  # noqa: E402

K = 10


def collect(workdir: Path, *, memories: bool = False) -> list[dict]:
    """Per development question: chat, question, its eval type, features, cites, evidence."""
    store = Store(workdir / "db", default_embedder())
    recall = Recall(store, lambda s: len(s) // 4 + 1)
    rerank.WEIGHTS = None
    out = []
    for path in chat_files(held_out=False):
        me, lines, questions = load_chat(path)
        person_id = path.stem.lower()
        jsonl = workdir / f"{path.stem}.jsonl"
        jsonl.write_text("".join(__import__("json").dumps(m) + "\n" for m in lines))
        if store.person(person_id) is None:
            store.save_person(Person(person_id=person_id, display_name=person_id))
        import_history(store, jsonl, person_id, me=me, fmt="jsonl")
        if memories:
            consolidate(store, person_id)
        now = max(datetime.fromisoformat(m["ts"]) for m in lines)
        for q in questions:
            rerank.TRACE = []
            _recall_items(recall, store, person_id, q["text"], K, now)
            if rerank.TRACE:
                question, x, cites = rerank.TRACE[-1]
                out.append(
                    {
                        "chat": path.stem,
                        "question": question,
                        "kind": q["kind"],
                        "x": x,
                        "cites": cites,
                        "evidence": set(q["evidence"]),
                    }
                )
    rerank.TRACE = None
    return out


def collect_synthetic(workdir: Path, seed: int) -> list[dict]:
    """The same for conversations from bench/data_gen.py with another seed than the synthetic
    eval's (0): questions whose answer shares no word with them ("What's my sister called?" /
    "Marta just turned thirty"), which REALTALK alone taught the model to undervalue."""
    convs = conversations(12, seed)
    store = Store(workdir / "synthetic", default_embedder())
    build(store, convs)
    recall = Recall(store, lambda s: len(s) // 4 + 1)
    chat = ChatContext("eval", "x", "direct")
    rerank.WEIGHTS = None
    out = []
    for conv in convs:
        vectors = store.embed([q.text for q in conv.questions])
        for q, vector in zip(conv.questions, vectors, strict=True):
            rerank.TRACE = []
            recall.recall(
                Person(person_id=conv.person),
                chat,
                vector,
                k=K,
                budget_tokens=10**9,
                query_text=q.text,
                now=NOW,
            )
            if rerank.TRACE:
                question, x, cites = rerank.TRACE[-1]
                out.append(
                    {
                        "chat": f"synthetic-{conv.person}",
                        "question": question,
                        "kind": f"synthetic {q.kind}",
                        "x": x,
                        "cites": cites,
                        "evidence": set(q.evidence),
                    }
                )
    rerank.TRACE = None
    return out


def labels(row: dict) -> np.ndarray:
    """A candidate is positive when it is evidence itself (labelling those that only bring
    evidence as a neighbour ranked the turn and its neighbours alike, which then crowd the top
    ten with one window: 0.623 against 0.643 leave-one-chat-out)."""
    return np.array([1.0 if c[0] in row["evidence"] else 0.0 for c in row["cites"]])


def recall_at(row: dict, order: np.ndarray, k: int = K) -> float:
    """Cited recall of the first k in `order`, a candidate already cited as a neighbour of an
    earlier one left out (as recall does)."""
    found: set[str] = set()
    taken = 0
    for i in order:
        cites = row["cites"][i]
        if cites[0] in found:
            continue
        found.update(cites)
        taken += 1
        if taken == k:
            break
    return len(found & row["evidence"]) / len(row["evidence"])


def oracle_at(row: dict, k: int = K) -> float:
    """The best cited recall any k of the candidates could reach (greedy cover: each pick the
    candidate whose cites add the most evidence), the ceiling a perfect reranker would meet."""
    left = set(row["evidence"])
    total = len(left)
    for _ in range(k):
        gains = [len(left & set(c)) for c in row["cites"]]
        if not gains or max(gains) == 0:
            break
        left -= set(row["cites"][int(np.argmax(gains))])
    return (total - len(left)) / total


def pool_at(row: dict) -> float:
    """Share of the evidence cited by any candidate at all."""
    found = {s for c in row["cites"] for s in c}
    return len(found & row["evidence"]) / len(row["evidence"])


def fit_types(rows: list[dict], l2: float, columns: np.ndarray, per_type: bool) -> dict[str, np.ndarray]:
    """One model per question type, or one for all ("all")."""
    weights = {}
    for kind in rerank.TYPES if per_type else ("all",):
        mine = [r for r in rows if rerank.question_type(r["question"]) == kind or not per_type] or rows
        x = np.vstack([r["x"][:, columns] for r in mine])
        y = np.concatenate([labels(r) for r in mine])
        w = np.zeros(len(rerank.FEATURES))
        w[columns] = rerank.fit(x, y, l2=l2)
        weights[kind] = w
    return weights


def evaluate(
    rows: list[dict], l2: float, columns: np.ndarray, per_type: bool
) -> dict[str, tuple[float, ...]]:
    """Leave one chat out: eval type -> (fused R@10, reranked R@10, reranked R@5, oracle@10 over
    the candidates, evidence anywhere in them)."""
    per: dict[str, list[tuple[float, ...]]] = {}
    for chat in sorted({r["chat"] for r in rows}):
        weights = fit_types([r for r in rows if r["chat"] != chat], l2, columns, per_type)
        for r in (r for r in rows if r["chat"] == chat):
            z = r["x"] @ rerank.weights_for(weights, r["question"])
            base = recall_at(r, np.arange(len(r["cites"])))
            order = np.argsort(-z, kind="stable")
            row = (base, recall_at(r, order), recall_at(r, order, 5), oracle_at(r), pool_at(r))
            per.setdefault(r["kind"], []).append(row)
            per.setdefault("all", []).append(row)
    return {k: tuple(float(x) for x in np.mean(np.array(v), axis=0)) for k, v in per.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--dump", type=Path, default=None, help="keep the collected features here (and reuse them)"
    )
    ap.add_argument("--l2", type=float, default=1.0)
    ap.add_argument("--drop", action="append", default=[], help="leave a feature out (ablation)")
    ap.add_argument("--per-type", action="store_true", help="one model per question type")
    ap.add_argument(
        "--synthetic-seed",
        type=int,
        default=None,
        help="also train on bench/data_gen.py conversations of this seed",
    )
    ap.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a recall constant, as in the eval"
    )
    ap.add_argument("--memories", action="store_true", help="consolidate each chat after import")
    args = ap.parse_args()
    for setting in args.set:
        name, value = setting.split("=", 1)
        setattr(recall_module, name, type(getattr(recall_module, name))(float(value)))
    if args.dump and args.dump.exists():
        rows = pickle.loads(args.dump.read_bytes())
    else:
        rows = collect(Path(tempfile.mkdtemp(prefix="rerank-train-")), memories=args.memories)
        if args.dump:
            args.dump.write_bytes(pickle.dumps(rows))
    if args.synthetic_seed is not None:
        cached = args.dump.with_suffix(f".synthetic{args.synthetic_seed}") if args.dump else None
        if cached and cached.exists():
            synthetic = pickle.loads(cached.read_bytes())
        else:
            synthetic = collect_synthetic(Path(tempfile.mkdtemp(prefix="rerank-syn-")), args.synthetic_seed)
            if cached:
                cached.write_bytes(pickle.dumps(synthetic))
        rows += synthetic
    columns = np.array([i for i, f in enumerate(rerank.FEATURES) if f not in args.drop])
    print(f"{len(rows)} development questions; features: {', '.join(rerank.FEATURES[i] for i in columns)}")
    n_candidates = np.mean([len(r["cites"]) for r in rows])
    print(f"{n_candidates:.0f} candidates per question on average")
    print(
        "| type | n | fused R@10 | reranked R@10 | reranked R@5 | oracle@10 | in pool |\n"
        "|---|---|---|---|---|---|---|"
    )
    result = evaluate(rows, args.l2, columns, args.per_type)
    for kind in (
        "single fact",
        "multi-hop",
        "time",
        "inference",
        *sorted({r["kind"] for r in rows if r["kind"].startswith("synthetic")}),
        "all",
    ):
        if kind in result:
            n = sum(1 for r in rows if r["kind"] == kind) if kind != "all" else len(rows)
            print(f"| {kind} | {n} | " + " | ".join(f"{v:.3f}" for v in result[kind]) + " |")
    weights = fit_types(rows, args.l2, columns, args.per_type)
    print("\nWEIGHTS = {")
    for kind, w in weights.items():
        print(f'    "{kind}": ({", ".join(f"{v:.4f}" for v in w)}),')
    print("}")


if __name__ == "__main__":
    main()
