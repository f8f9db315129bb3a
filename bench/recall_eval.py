"""Personal-recall eval: does the assistant answer with what the person told it weeks ago?

Each case stores four sessions of a person's messages (with dates in the past), then asks one
question in a new session, so only recall can bring the fact back. Score: answers that contain
the expected fact. Runs the bundled model greedily, once per prompt layout, plus a no-recall
baseline. `python bench/recall_eval.py [--limit N]`
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.personal_cases import Case, cases
from bench.targets import Targets
from core.assistant import Assistant
from core.config import Settings
from core.llm.prompt import LAYOUTS
from core.memory.embed import default_embedder
from core.memory.records import Person, Turn
from core.memory.store import Store
from core.messages import Incoming


def key_word(expected: str) -> str:
    return max(expected.replace(".", "").split(), key=len).lower()


def seed_store(store: Store, items: list[Case]) -> None:
    turns = []
    for case in items:
        store.save_person(Person(case.person, case.person))
        store.link_identity("console", case.person, case.person)
        for s, session in enumerate(case.sessions):
            for j, text in enumerate(session.said):
                common = dict(person_id=case.person, platform="console", chat_id=f"{case.person}-s{s}")
                turns.append(Turn(**common, message_id=f"{s}-{j}", role="user", text=text, ts=session.day))
                turns.append(
                    Turn(
                        **common,
                        message_id=f"{s}-{j}",
                        role="assistant",
                        text="Good to know.",
                        ts=session.day,
                    )
                )
    store.add_turns(turns)


async def ask(assistant: Assistant, case: Case, tag: str) -> str:
    msg = Incoming(
        platform="console",
        chat_id=f"{case.person}-ask-{tag}",
        sender_id=case.person,
        text=case.question,
        message_id=f"q-{tag}",
    )
    reply = await assistant.handle(msg)
    return await reply.collect() if reply else ""


async def score(assistant: Assistant, items: list[Case], tag: str) -> tuple[int, float]:
    hits = 0
    started = time.perf_counter()
    for case in items:
        answer = await ask(assistant, case, tag)
        hits += key_word(case.expected) in answer.lower()
    return hits, time.perf_counter() - started


def build(data: Path, models_dir: Path) -> tuple[Settings, Store, object]:
    from core.llm.engine import Engine
    from core.llm.model import load_model

    settings = Settings(data_dir=data, model_cache_dir=models_dir, temperature=0.0, max_new_tokens=40)
    settings.ensure_data_dir()
    store = Store(data / "lancedb", default_embedder())
    return settings, store, Engine(load_model(settings), settings)


async def main(limit: int, model_dir: Path) -> Targets:
    items = cases()[:limit]
    with tempfile.TemporaryDirectory() as tmp:
        settings, store, engine = build(Path(tmp), model_dir.resolve())
        seed_store(store, items)
        table = Table(title=f"Personal recall, bundled model, {len(items)} cases")
        table.add_column("configuration")
        table.add_column("score", justify="right")
        table.add_column("seconds", justify="right")
        configs = [("no recall", "inline", False)] + [
            (f"recall, layout={name}", name, True) for name in LAYOUTS
        ]
        results: dict[str, int] = {}
        for label, layout, use_recall in configs:
            assistant = Assistant(settings, store, engine, layout=layout, use_recall=use_recall)
            hits, seconds = await score(assistant, items, label)
            results[label] = hits
            table.add_row(label, f"{hits}/{len(items)} ({hits / len(items):.0%})", f"{seconds:.0f}")
        Console().print(table)
    targets = Targets("recall_eval targets")
    baseline = results.pop("no recall")
    for label, hits in results.items():  # only recall can bring the fact back
        targets.check(f"{label}: answers with the fact, vs {baseline} without recall", hits, ">", baseline)
    return targets


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=48)
    parser.add_argument("--model-dir", type=Path, default=Path("data/models"))
    args = parser.parse_args()
    asyncio.run(main(args.limit, args.model_dir)).exit()
