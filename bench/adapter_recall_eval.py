"""Personal recall with per-person adapters: does the adapter itself learn what a person said?

The people of bench/personal_cases.py (issue #3), bundled SmolLM2, greedy. Each evaluated
person's sessions are stored and consolidated into memories exactly as the workers do, then
`workers.training.refresh_adapter` (the real refresh: their pairs, replay, gate, promotion)
trains their adapter. Only then are questions asked, with recording paused, so no asked question
or generated answer reaches a training set or another column's recall.

Every person told four facts; by default all four are asked (`--facts one`: only the case's own
question). Each question is asked in a wording the adapter never trained on (HELDOUT below; the
eval checks it against the person's actual training questions), so the adapter columns measure
what it learned, not a memorised string. "Recall off" also leaves out the profile (it is made
from the same memories). Columns: base model without and with recall, adapter
alone with recall switched off, adapter + recall; plus the adapters' gate scores (held-out NLL,
general-set perplexity change).

Usage: python bench/adapter_recall_eval.py [--people 6] [--facts all|one] [--show]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.personal_cases import Case, cases  # noqa: E402
from bench.recall_eval import ask, key_word, seed_store  # noqa: E402
from core.assistant import Assistant  # noqa: E402
from core.config import Settings  # noqa: E402

console = Console(width=170)

# Wordings of each FACTS question that training does not generate (checked at run time).
HELDOUT: dict[str, list[str]] = {
    "What am I training for?": ["Which race am I preparing for?", "What event am I getting ready for?"],
    "What is my dog called?": ["What did I name my dog?", "Do you know my dog's name?"],
    "What is my job?": ["What's my profession?", "What do I do for work?"],
    "Which city do I live in?": ["What city am I based in?", "Where is my home?"],
    "What am I allergic to?": ["Which allergy do I have?", "What gives me an allergic reaction?"],
    "What is my sister's name?": ["Who is my sister?", "Do you know my sister's name?"],
    "Which language am I learning?": ["Which language am I studying this year?", "What language am I picking up?"],
    "Which instrument do I play?": ["What instrument do I play in my band?", "Which instrument is mine in the band?"],
    "What is my favourite food?": ["Which food do I like best?", "What food do I love most?"],
    "What am I building at work?": ["What project am I working on at work?", "What am I making at my job?"],
    "What car do I drive?": ["Which car do I have?", "What kind of car is mine?"],
    "In which month is my birthday?": ["What month was I born in?", "When do I celebrate my birthday?"],
}  # fmt: skip


def pick(n: int) -> list[Case]:
    """n of the 48 people, every k-th, so the subset covers the question kinds evenly."""
    items = cases()
    if n >= len(items):
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def heldout_questions(items: list[Case], trained: dict[str, set[str]], all_facts: bool) -> list[Case]:
    """One case per asked fact, worded as no training question of that person was."""
    out = []
    for case in items:
        facts = case.facts if all_facts else [(case.question, case.expected)]
        seen = trained[case.person]
        for question, expected in facts:
            wording = next((w for w in HELDOUT[question] if w.lower() not in seen), None)
            if wording is None:
                raise SystemExit(f"every wording of {question!r} was trained on; add another to HELDOUT")
            out.append(replace(case, question=wording, expected=expected))
    return out


def trained_questions(person: str, store, settings: Settings) -> set[str]:
    """Every question text in this person's training pairs, lowercased (context blocks included)."""
    from workers.training import build_person_pairs

    return {p.question.lower() for _, p in build_person_pairs(person, store, settings).pairs}


class NoMemoryAssistant(Assistant):
    """Recall off means nothing remembered reaches the prompt: no recalled items and no profile
    (the profile is built from the same memories and would otherwise answer for the adapter)."""

    def prompt_for(self, person, chat, text, recalled, recent):
        return super().prompt_for(replace(person, profile=""), chat, text, recalled, recent)


async def score(assistant, asked: list[Case], tag: str) -> tuple[int, list[str]]:
    hits, answers = 0, []
    for k, case in enumerate(asked):
        answer = await ask(assistant, case, f"{tag}-{k}")  # a new chat per question
        answers.append(answer)
        hits += key_word(case.expected) in answer.lower()
    return hits, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=6)
    parser.add_argument("--facts", choices=["all", "one"], default="all")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "data" / "models")
    parser.add_argument("--show", action="store_true", help="print each answer")
    args = parser.parse_args()
    items = pick(args.people)

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

        # one adapter per person, trained by the workers' refresh before any question is asked
        loaded = training_model(settings)
        started = time.perf_counter()
        results = {}
        for case in items:
            results[case.person] = refresh_adapter(case.person, store, settings, force=True, loaded=loaded)
        train_seconds = time.perf_counter() - started
        trained = {case.person: trained_questions(case.person, store, settings) for case in items}
        asked = heldout_questions(items, trained, args.facts == "all")
        # an adapter learns only what consolidation kept: which asked facts became memories
        kept = [
            any(
                key_word(c.expected) in m.text.lower() for m in store.memories_of(c.person, current_only=True)
            )
            for c in asked
        ]
        for case in items:  # asking records nothing: no answer feeds recall or a later column
            person = store.person(case.person)
            person.settings.paused = True
            store.save_person(person)

        rows: list[tuple[str, int, float]] = []
        shown: dict[str, list[str]] = {}
        base = Engine(load_model(settings), settings.model_copy(update={"adapters_enabled": False}))
        engine = Engine(load_model(settings), settings)
        for label, eng, use_recall in (
            ("base model, no recall", base, False),
            ("base model + recall", base, True),
            ("adapter alone, recall off", engine, False),
            ("adapter + recall", engine, True),
        ):
            started = time.perf_counter()
            kind = Assistant if use_recall else NoMemoryAssistant
            assistant = kind(settings, store, eng, use_recall=use_recall)
            hits, answers = asyncio.run(score(assistant, asked, label))
            rows.append((label, hits, time.perf_counter() - started))
            shown[label] = answers
        base.close()
        engine.close()

    promoted = [r for r in results.values() if r.status == "promoted"]
    n = len(asked)
    table = Table(
        title=f"Personal recall with per-person adapters: bundled SmolLM2, greedy, {len(items)} people, "
        f"{n} questions in wordings not trained on"
    )
    m = sum(kept)
    for col in ("configuration", "score", f"on the {m} facts kept as memories", "seconds"):
        table.add_column(col, justify="right")
    for label, hits, seconds in rows:
        on_kept = sum(
            k and key_word(c.expected) in a.lower() for k, c, a in zip(kept, asked, shown[label], strict=True)
        )
        table.add_row(label, f"{hits}/{n} ({hits / n:.0%})", f"{on_kept}/{m}", f"{seconds:.0f}")
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
    changes = [r.scores["general_ppl_change"] for r in scored]
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
        for k, case in enumerate(asked):
            console.print(
                f"{case.person} {case.question} ({case.expected}) | "
                + " | ".join(f"{label.split(',')[0]}: {shown[label][k]!r}" for label, _, _ in rows),
                markup=False,
            )


if __name__ == "__main__":
    main()
