"""Embedding speed and fidelity: query latency, batch throughput, cosine to the fp32 model.

Query latency is one short sentence per call (what the pipeline embeds per message); batch
throughput is chat messages from bench/data_gen.py and the import bench's generated export.
Fidelity compares our vectors with sentence-transformers' fp32 PyTorch encoding of the same
texts (the embedder before it was exported and quantized).

    python bench/embed_bench.py [--queries 200] [--messages 4000] [--reference]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.data_gen import conversations, filler_sentences  # noqa: E402
from core.memory.embed import _model_dir, _package_dir, default_embedder  # noqa: E402


def chat_texts(n: int) -> list[str]:
    convs = conversations(12)
    return [t.text for c in convs for t in c.turns][:n]


def import_texts(n: int) -> list[str]:
    """The same shape as bench/import_throughput.py's messages (speaker prefix, unique tail)."""
    rng = random.Random(1)
    pool = filler_sentences(5000, seed=2)
    return [f"Friend {rng.randrange(40)}: {rng.choice(pool)} #{rng.randrange(40)}-{i}" for i in range(n)]


def questions(n: int) -> list[str]:
    qs = [q.text for c in conversations(12) for q in c.questions]
    return (qs * (n // len(qs) + 1))[:n]


def timed(fn, *args) -> tuple[float, float, object]:
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    return time.perf_counter() - w, time.process_time() - c, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--messages", type=int, default=4000)
    ap.add_argument("--reference", action="store_true", help="also time sentence-transformers fp32")
    args = ap.parse_args()

    embedders: list[tuple[str, object]] = [("ours", default_embedder())]
    reference = None
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(_model_dir(_package_dir())), device="cpu")

    class ST:
        def embed(self, texts: list[str]) -> np.ndarray:
            return st.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)

    reference = ST()
    if args.reference:
        embedders.append(("sentence-transformers fp32", reference))

    sets = {"chat (data_gen)": chat_texts(args.messages), "import bench": import_texts(args.messages)}
    qs = questions(args.queries)
    print(f"{'embedder':28} {'query p50 ms':>12} {'p95 ms':>7} {'cpu p50':>8}", end="")
    for name in sets:
        print(f" {name + ' msg/s':>22} {'cpu ms/msg':>10}", end="")
    print()
    for name, emb in embedders:
        emb.embed(["warm up"])  # type: ignore[attr-defined]
        emb.embed(qs[:64])  # type: ignore[attr-defined]
        walls, cpus = [], []
        for q in qs:
            w, c, _ = timed(emb.embed, [q])  # type: ignore[attr-defined]
            walls.append(w)
            cpus.append(c)
        print(
            f"{name:28} {np.percentile(walls, 50) * 1e3:>12.1f} {np.percentile(walls, 95) * 1e3:>7.1f}"
            f" {np.percentile(cpus, 50) * 1e3:>8.1f}",
            end="",
        )
        for texts in sets.values():
            w, c, _ = timed(emb.embed, texts)  # type: ignore[attr-defined]
            print(f" {len(texts) / w:>22.0f} {c * 1e3 / len(texts):>10.2f}", end="")
        print()

    ours = default_embedder()
    print("\ncosine of our vectors to sentence-transformers fp32 on the same texts")
    for name, texts in {**sets, "questions": qs}.items():
        texts = texts[:1000]
        cos = np.sum(ours.embed(texts) * reference.embed(texts), axis=1)
        print(
            f"  {name:18} n={len(texts):5}  mean {cos.mean():.4f}  p5 {np.percentile(cos, 5):.4f}"
            f"  min {cos.min():.4f}"
        )


if __name__ == "__main__":
    main()
