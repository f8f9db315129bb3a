"""The pipeline's own overhead per message (everything except generation), with a big store.

Fills LanceDB with N turns across P people (real text, random unit vectors: the vectors'
content does not change the cost) and registers every one of them (a person row and an
account), then opens the store afresh, as a restarted `confidante run` would, and times
messages end to end through Assistant.handle with an engine that answers instantly. What is
left is identity, dedupe, recording, embedding, recall, prompt building and recording the reply.

The workload is people talking, not single messages: each session picks a person who has not
written since the start and sends `--burst` messages back to back (no pause, so background work
of one message overlaps the next). The first message of a session pays the cold caches (the
chat's recent window is read from LanceDB); the later ones are the steady state. A few senders
never seen before measure registration. Each row reports its own percentiles.
`python bench/pipeline_bench.py [--turns 200000 --people 2000 --messages 200 --burst 5]`
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
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from bench.targets import Targets
from core.assistant import Assistant
from core.config import Settings
from core.memory.embed import DIM, default_embedder
from core.memory.records import Turn
from core.memory.store import SCHEMAS, Store, open_store
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


def register(store: Store, people: int) -> None:
    """Every person with a history has a people row and an account (as `Identities.resolve`
    leaves them), written in one batch per table: the store opened afterwards loads them."""
    now = datetime.now(UTC)
    store.table("people").add(
        pa.Table.from_pylist(
            [
                {
                    "person_id": f"p{p}",
                    "display_name": f"p{p}",
                    "settings": "{}",
                    "adapter_version": "",
                    "profile": "",
                    "created_at": now,
                }
                for p in range(people)
            ],
            schema=SCHEMAS["people"],
        )
    )
    store.table("identities").add(
        pa.Table.from_pylist(
            [
                {
                    "key": f"console\x1fp{p}",
                    "platform": "console",
                    "platform_user_id": f"p{p}",
                    "person_id": f"p{p}",
                    "linked_at": now,
                }
                for p in range(people)
            ],
            schema=SCHEMAS["identities"],
        )
    )


def fill(store: Store, turns: int, people: int, batch: int = 20_000) -> float:
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    base = datetime(2025, 1, 1, tzinfo=UTC)
    register(store, people)
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


async def one(assistant: Assistant, sender: str, text: str, message_id: str) -> float:
    msg = Incoming(platform="console", chat_id=sender, sender_id=sender, text=text, message_id=message_id)
    started = time.perf_counter()
    reply = await assistant.handle(msg)
    await reply.collect()
    return (time.perf_counter() - started) * 1000


async def sessions(
    assistant: Assistant, people: list[str], burst: int, tag: str
) -> tuple[list[float], list[float]]:
    """(first message of each session, the later ones)."""
    rng = random.Random(tag)
    first: list[float] = []
    later: list[float] = []
    for s, person in enumerate(people):
        for b in range(burst):
            text = f"what about the {rng.choice(WORDS)} {s}-{b}?"
            took = await one(assistant, person, text, f"{tag}-{s}-{b}")
            (first if b == 0 else later).append(took)
    return first, later


async def newcomers(assistant: Assistant, n: int) -> list[float]:
    return [await one(assistant, f"new{i}", "hello, nice to meet you", f"new-{i}") for i in range(n)]


def row(table: Table, label: str, timings: list[float]) -> None:
    if len(timings) < 2:
        table.add_row(label, str(len(timings)), "-", "-", "-")
        return
    q = statistics.quantiles(timings, n=100, method="inclusive")
    table.add_row(label, str(len(timings)), f"{q[49]:.1f}", f"{q[94]:.1f}", f"{max(timings):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=200_000)
    parser.add_argument("--people", type=int, default=2_000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--burst", type=int, default=5, help="messages per session, back to back")
    parser.add_argument("--newcomers", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), _env_file=None)
        fill_s = fill(Store(settings.data_dir / "lancedb", default_embedder()), args.turns, args.people)
        store = open_store(settings, journal=True)  # a fresh process: nothing cached yet
        assistant = Assistant(settings, store, InstantEngine())
        order = random.Random(1).sample(range(args.people), args.people)
        n_sessions = max(1, args.messages // args.burst)
        warm = [f"p{p}" for p in order[:4]]
        timed = [f"p{p}" for p in order[4 : 4 + n_sessions]]
        asyncio.run(sessions(assistant, warm, args.burst, "warm"))  # the embedder and the query paths
        first, later = asyncio.run(sessions(assistant, timed, args.burst, "run"))
        new = asyncio.run(newcomers(assistant, args.newcomers))
        assistant.close()  # the last staged turns reach LanceDB before the folder goes
    table = Table(
        title=f"Pipeline overhead per message, ms ({args.turns:,} turns, {args.people:,} people, "
        f"sessions of {args.burst}; store filled in {fill_s:.0f} s; target p95 < 50 ms)"
    )
    for col in ("messages", "n", "p50", "p95", "max"):
        table.add_column(col, justify="right")
    row(table, "all in sessions", first + later)
    row(table, "first of a session (cold)", first)
    row(table, "later in a session (warm)", later)
    row(table, "a newcomer's first (registers)", new)
    Console().print(table)
    targets = Targets("pipeline_bench targets")
    everything = first + later
    p95 = statistics.quantiles(everything, n=100, method="inclusive")[94] if len(everything) > 1 else 0.0
    targets.check("pipeline overhead p95, all in sessions, ms", round(p95, 1), "<", 50)
    targets.exit()


if __name__ == "__main__":
    main()
