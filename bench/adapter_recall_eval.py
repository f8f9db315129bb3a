"""Personal recall with per-person adapters: does the adapter itself learn what a person said?

The 48 cases of bench/personal_cases.py (issue #3), bundled SmolLM2, greedy. For each evaluated
person, their sessions are stored and consolidated into memories exactly as the workers do,
then `workers.training.refresh_adapter` (the real refresh: their pairs, replay, gate,
promotion) trains their adapter. Columns: base model without and with recall, adapter alone
with recall switched off, adapter + recall; plus each adapter's general-set perplexity change.

Training one adapter per person is the cost: by default a subset of the people is evaluated
(`--people`, spread over all twelve question kinds); `--full` runs all 48.

Usage: python bench/adapter_recall_eval.py [--people 12] [--full] [--model-dir data/models]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.personal_cases import cases  # noqa: E402
from bench.recall_eval import ask, key_word, seed_store  # noqa: E402
from core.config import Settings  # noqa: E402

console = Console(width=170)


def pick(n: int) -> list:
    """n of the 48 cases, every k-th, so the subset covers the question kinds evenly."""
    items = cases()
    if n >= len(items):
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


async def score(assistant, items, tag: str) -> tuple[int, list[str]]:
    hits, answers = 0, []
    for case in items:
        answer = await ask(assistant, case, tag)
        answers.append(answer)
        hits += key_word(case.expected) in answer.lower()
    return hits, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=12)
    parser.add_argument("--full", action="store_true", help="all 48 cases (about 4x the time)")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "data" / "models")
    parser.add_argument("--show", action="store_true", help="print each answer")
    args = parser.parse_args()
    items = pick(48 if args.full else args.people)

    from core.assistant import Assistant
    from core.llm.engine import Engine
    from core.llm.model import load_model
    from core.memory.consolidate import Consolidator
    from core.memory.embed import default_embedder
    from core.memory.extract import RuleExtractor
    from core.memory.store import Store
    from workers.training import refresh_adapter, training_model

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        settings = Settings(
            data_dir=data,
            model_cache_dir=args.model_dir.resolve(),
            temperature=0.0,
            max_new_tokens=40,
            _env_file=None,
        )
        settings.ensure_data_dir()
        store = Store(data / "lancedb", default_embedder())
        seed_store(store, items)
        consolidator = Consolidator(store, RuleExtractor())
        for case in items:
            consolidator.run(case.person)

        # base model, adapters off: with and without recall
        rows: list[tuple[str, int, float]] = []
        base = Engine(load_model(settings), settings.model_copy(update={"adapters_enabled": False}))
        for label, use_recall in (("base model, no recall", False), ("base model + recall", True)):
            started = time.perf_counter()
            hits, _ = asyncio.run(
                score(Assistant(settings, store, base, use_recall=use_recall), items, label)
            )
            rows.append((label, hits, time.perf_counter() - started))
        base.close()

        # one adapter per person, trained by the workers' refresh
        loaded = training_model(settings)
        started = time.perf_counter()
        results = {}
        for case in items:
            results[case.person] = refresh_adapter(case.person, store, settings, force=True, loaded=loaded)
        train_seconds = time.perf_counter() - started

        engine = Engine(load_model(settings), settings)
        shown = {}
        for label, use_recall in (("adapter alone, recall off", False), ("adapter + recall", True)):
            started = time.perf_counter()
            assistant = Assistant(settings, store, engine, use_recall=use_recall)
            hits, answers = asyncio.run(score(assistant, items, label))
            rows.append((label, hits, time.perf_counter() - started))
            shown[label] = answers
        engine.close()

    promoted = [r for r in results.values() if r.status == "promoted"]
    changes = [r.scores["general_ppl_change"] for r in results.values() if r.scores]
    table = Table(
        title=f"Personal recall with per-person adapters: bundled SmolLM2, greedy, {len(items)} of 48 cases"
    )
    for col in ("configuration", "score", "seconds"):
        table.add_column(col, justify="right")
    for label, hits, seconds in rows:
        table.add_row(label, f"{hits}/{len(items)} ({hits / len(items):.0%})", f"{seconds:.0f}")
    console.print(table)
    t2 = Table(title="The adapters (workers.training.refresh_adapter, one per person)")
    for col in (
        "promoted",
        "train pairs (median)",
        "held-out NLL before->after (median)",
        "general ppl change (median, max)",
        "refresh s (median)",
        "all refreshes s",
    ):
        t2.add_column(col, justify="right")
    scored = [r for r in results.values() if r.scores]
    t2.add_row(
        f"{len(promoted)}/{len(results)}",
        f"{statistics.median(r.train_size for r in results.values()):.0f}",
        f"{statistics.median(r.scores['heldout_nll_before'] for r in scored):.2f} -> "
        f"{statistics.median(r.scores['heldout_nll_after'] for r in scored):.2f}",
        f"{statistics.median(changes):+.1%}, {max(changes):+.1%}",
        f"{statistics.median(r.seconds for r in results.values()):.0f}",
        f"{train_seconds:.0f}",
    )
    console.print(t2)
    rejected = [r.reason for r in results.values() if r.status != "promoted"]
    if rejected:
        console.print(f"not promoted: {rejected}")
    if args.show:
        for case, a, b in zip(
            items, shown["adapter alone, recall off"], shown["adapter + recall"], strict=True
        ):
            console.print(f"{case.question} [{case.expected}] | alone: {a!r} | +recall: {b!r}")


if __name__ == "__main__":
    main()
