"""Import throughput and memory: a generated Telegram full-account export of N messages.

Prints messages/s, the time spent embedding vs. everything else, the process's CPU time, and
resident memory at each quarter of the file (it should stay flat: the file is streamed and
embedded in batches). Embedding runs on a writer thread beside the parsing, so "other s" is the
wall time not covered by embedding, not all the time the rest took.

    python bench/import_throughput.py --messages 100000 [--dir /tmp/import-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.data_gen import filler_sentences  # noqa: E402
from bench.targets import Targets  # noqa: E402
from core.memory.embed import DIM, default_embedder  # noqa: E402
from core.memory.importers import import_history  # noqa: E402
from core.memory.store import Store  # noqa: E402


def write_export(path: Path, messages: int, chats: int = 40) -> None:
    """A Telegram Desktop full-account result.json, written message by message."""
    rng = random.Random(1)
    texts = filler_sentences(5000, seed=2)
    start = int(datetime(2021, 1, 1, tzinfo=UTC).timestamp())
    per_chat = messages // chats
    with path.open("w", encoding="utf-8") as fp:
        fp.write(
            '{\n "personal_information": {"user_id": 111, "first_name": "Dana"},\n "chats": {"list": [\n'
        )
        for c in range(chats):
            fp.write(f'  {{"name": "Friend {c}", "type": "personal_chat", "id": {1000 + c}, "messages": [\n')
            for i in range(per_chat):
                mine = rng.random() < 0.5
                text: object = f"{rng.choice(texts)} #{c}-{i}"
                if rng.random() < 0.1:
                    text = [text, {"type": "bold", "text": " really"}]
                ts = start + (c * per_chat + i) * 90
                msg = {
                    "id": i + 1,
                    "type": "message",
                    "date": datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                    "date_unixtime": str(ts),
                    "from": "Dana" if mine else f"Friend {c}",
                    "from_id": "user111" if mine else f"user{2000 + c}",
                    "text": text,
                }
                fp.write("   " + json.dumps(msg, ensure_ascii=False) + (",\n" if i < per_chat - 1 else "\n"))
            fp.write("  ]}" + (",\n" if c < chats - 1 else "\n"))
        fp.write(" ]}\n}\n")


class HashEmbedder:
    """Unit vectors from hashed tokens: no model, so the rest of the import is what is timed."""

    dim = DIM

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in text.lower().split():
                out[row, hash(token) % DIM] += 1.0
        out += 1e-6
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def rss_mb() -> float:
    with open("/proc/self/statm") as fp:
        return int(fp.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument(
        "--hash-embedder",
        action="store_true",
        help="embed with a cheap token-hash projection: measures everything but the model",
    )
    args = ap.parse_args()
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="import-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    export = workdir / "result.json"
    write_export(export, args.messages)
    embedder = HashEmbedder() if args.hash_embedder else default_embedder()
    embedder.embed(["warm up"])
    store = Store(workdir / "db", embedder)

    spent = {"embed": 0.0}
    real_embed = embedder.embed

    def timed_embed(texts: list[str]) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            return real_embed(texts)
        finally:
            spent["embed"] += time.perf_counter() - t0

    embedder.embed = timed_embed  # type: ignore[method-assign]
    marks: dict[int, float] = {}
    total = export.stat().st_size

    def progress(done: int, size: int) -> None:
        quarter = min(4, 4 * done // max(size, 1))
        if quarter not in marks:
            marks[quarter] = rss_mb()

    rss0 = rss_mb()
    t0, cpu0 = time.perf_counter(), time.process_time()
    report = import_history(store, export, "dana", progress=progress)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    t1 = time.perf_counter()
    again = import_history(store, export, "dana")
    wall_again = time.perf_counter() - t1
    model = "token-hash (no model)" if args.hash_embedder else "MiniLM"
    print(f"\nexport: {args.messages:,} messages, {total / 2**20:.1f} MiB; embedder: {model}")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        f"{'run':14} {'imported':>9} {'seconds':>8} {'msg/s':>7} {'embed s':>8} {'other s':>8} {'cpu s':>7}"
    )
    print(
        f"{'first import':14} {report.imported:>9,} {wall:>8.1f} {report.read / wall:>7.0f} "
        f"{spent['embed']:>8.1f} {wall - spent['embed']:>8.1f} {cpu:>7.1f}"
    )
    print(f"{'re-import':14} {again.imported:>9,} {wall_again:>8.1f} {again.read / wall_again:>7.0f}")
    quarters = ", ".join(f"{q * 25}%: {mb:.0f}" for q, mb in sorted(marks.items()))
    print(f"resident memory (MiB): start {rss0:.0f}, {quarters}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.dir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    targets = Targets("import_throughput targets")
    # the file is streamed and embedded in batches: memory must not grow with the export
    first, last = marks.get(1, rss0), marks.get(4, max(marks.values(), default=rss0))
    targets.check("resident memory growth, first to last quarter, MiB", round(last - first), "<=", 256)
    targets.check("re-import: messages stored twice", again.imported, "==", 0)
    targets.exit()


if __name__ == "__main__":
    main()
