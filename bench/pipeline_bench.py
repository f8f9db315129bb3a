"""The pipeline's own overhead per message (everything except generation), with a big store.

Fills LanceDB with N turns across P people (real text, random unit vectors: the vectors'
content does not change the cost), then times 200 messages end to end through
Assistant.handle with an engine that answers instantly, so what is left is identity, dedupe,
recording, embedding, recall, prompt building and recording the reply.
`python bench/pipeline_bench.py [--turns 200000 --people 2000]`
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from core.assistant import Assistant
from core.config import Settings
from core.memory.embed import DIM, default_embedder
from core.memory.records import Person, Turn
from core.memory.store import Store
from core.messages import Incoming

WORDS = [
    "marathon",
    "coffee",
    "project",
    "berlin",
    "sister",
    "guitar",
    "deadline",
    "garden",
    "python",
    "meeting",
    "dinner",
    "travel",
]


class InstantEngine:
    """Answers at once with a fixed reply: the benchmark measures everything around generation."""

    context_tokens = 2048

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    async def stream(self, messages, **kwargs):
        yield "ok"


def fill(store: Store, turns: int, people: int, batch: int = 20_000) -> float:
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    base = datetime(2025, 1, 1, tzinfo=UTC)
    for p in range(people):
        store.save_person(Person(f"p{p}", f"p{p}")) if p < 50 else None
    written = 0
    while written < turns:
        n = min(batch, turns - written)
        vectors = rng.standard_normal((n, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows = []
        for i in range(n):
            k = written + i
            person = f"p{k % people}"
            text = " ".join(random.Random(k).choices(WORDS, k=8))
            rows.append(
                Turn(
                    person,
                    "console",
                    person,
                    f"m{k}",
                    "user",
                    text,
                    ts=base + timedelta(minutes=k),
                    vector=vectors[i].tolist(),
                )
            )
        store.add_turns(rows)
        written += n
    store.ensure_indexes()
    return time.perf_counter() - started


async def measure(assistant: Assistant, people: int, messages: int, tag: str) -> list[float]:
    rng = random.Random(tag)
    timings = []
    for i in range(messages):
        person = f"p{rng.randrange(people)}"
        msg = Incoming(
            platform="console",
            chat_id=person,
            sender_id=person,
            text=f"what about the {rng.choice(WORDS)} {i}?",
            message_id=f"{tag}-{i}",
        )
        started = time.perf_counter()
        reply = await assistant.handle(msg)
        await reply.collect()
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=200_000)
    parser.add_argument("--people", type=int, default=2_000)
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        store = Store(Path(tmp) / "lancedb", default_embedder())
        fill_s = fill(store, args.turns, args.people)
        assistant = Assistant(settings, store, InstantEngine())
        asyncio.run(measure(assistant, args.people, 20, "warm"))  # warm caches and the embedder
        timings = asyncio.run(measure(assistant, args.people, args.messages, "run"))
    q = statistics.quantiles(timings, n=100)
    table = Table(title=f"Pipeline overhead per message ({args.turns:,} turns, {args.people:,} people)")
    for col in ("store fill (s)", "messages", "p50 ms", "p95 ms", "max ms", "target p95"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{fill_s:.0f}", str(len(timings)), f"{q[49]:.1f}", f"{q[94]:.1f}", f"{max(timings):.1f}", "< 50 ms"
    )
    Console().print(table)


if __name__ == "__main__":
    main()
