"""Per-person adapter benchmarks: serving many adapters at once, loading them, training one.

Usage: python bench/adapter_bench.py [--data-dir DIR] [--people 8] [--new-tokens 32]
       [--skip-training] [--peft] [--device cpu|cuda] [--random-weights]

Tables:
1. 8 people with 8 different adapters talking at once: aggregate tokens/s and p95 time to first
   token for the batched mixed-adapter engine, for the same requests one at a time, and for the
   same batch with adapters off (the ceiling); optionally PEFT's own `adapter_names` batch.
2. Adapter load from disk (p50), swap cost, bytes per adapter.
3. A refresh on 200 Q->A pairs (training + gate) in a fresh process: time and peak memory.
4. A second refresh continuing from the previous version vs. training from scratch: gate scores, time.

Targets (2 CPU cores, bundled model, under the CPU lock): the mixed-adapter batch at least
1.5 times the tokens/s of the same requests one at a time (batching is why adapters are served in
one engine) and at least 0.75 of the same batch with adapters off (a bf16 mixed batch once sat
at 0.69 of it, which the fp32 batched LoRA fixed); an adapter loads from disk in under 50 ms
(p50: a swap is invisible next to a first token); a refresh finishes in under 5 minutes and
4 GB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.targets import Targets  # noqa: E402
from core.config import Settings  # noqa: E402

console = Console(width=170)
targets = Targets("adapter_bench targets")
TARGET_VS_SEQUENTIAL = 1.5
TARGET_VS_CEILING = 0.75
TARGET_LOAD_MS = 50.0
TARGET_REFRESH_S = 300.0
TARGET_REFRESH_MB = 4096.0


def p95(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]


def make_adapters(model, folder: Path, count: int, rank: int = 8) -> list[Path]:
    """Random non-zero PEFT LoRA adapters (q/k/v/o), saved exactly as training saves them."""
    import torch
    from peft import LoraConfig, get_peft_model

    from core.llm.adapters import plain_copy

    paths = []
    base = plain_copy(model).float()
    cfg = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=False,
    )
    peft_model = get_peft_model(base, cfg)
    for i in range(count):
        torch.manual_seed(1000 + i)
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_" in name:
                    p.normal_(0, 0.02)
        path = folder / f"person{i}"
        peft_model.save_pretrained(path)
        paths.append(path)
    return paths


def prompts(engine, people: int, tokens: int) -> list[list[dict]]:
    topics = [
        "running",
        "gardening",
        "chess",
        "baking",
        "sailing",
        "painting",
        "cycling",
        "jazz",
        "hiking",
        "coding",
    ]
    out = []
    for i in range(people):
        text = f"Let me tell you about my week of {topics[i % len(topics)]}. "
        while engine.count_tokens(text) < tokens - 20:
            text += f"On day {len(text) % 7 + 1} I spent an hour on {topics[(i + len(text)) % len(topics)]} and felt good. "
        out.append([{"role": "user", "content": text + " What should I do next?"}])
    return out


async def one(engine, messages, adapter, new_tokens) -> tuple[float, int]:
    start = time.perf_counter()
    first = None
    count = 0
    async for _ in engine.stream(messages, adapter=adapter, max_new_tokens=new_tokens, temperature=0):
        first = first or time.perf_counter()
        count += 1
    return (first or time.perf_counter()) - start, count


def _fresh(engine) -> None:
    """Every mode pays its prefills: no prompt KV kept from an earlier round or mode."""
    if hasattr(engine, "forget_prefixes"):
        engine.forget_prefixes()


async def run_concurrent(engine, chats, adapters, new_tokens) -> tuple[float, float, float]:
    _fresh(engine)
    before = engine.stats.tokens
    start = time.perf_counter()
    results = await asyncio.gather(
        *[one(engine, c, a, new_tokens) for c, a in zip(chats, adapters, strict=True)]
    )
    elapsed = time.perf_counter() - start
    return (engine.stats.tokens - before) / elapsed, p95([r[0] for r in results]), elapsed


async def run_sequential(engine, chats, adapters, new_tokens) -> tuple[float, float, float]:
    _fresh(engine)
    before = engine.stats.tokens
    start = time.perf_counter()
    ttfts = []
    for c, a in zip(chats, adapters, strict=True):
        ttfts.append((await one(engine, c, a, new_tokens))[0])
    elapsed = time.perf_counter() - start
    return (engine.stats.tokens - before) / elapsed, p95(ttfts), elapsed


def peft_batch(loaded, paths, chats, new_tokens, device) -> tuple[float, float]:
    """PEFT's mixed batch (generate with adapter_names), for comparison with the issue's numbers."""
    import torch
    from peft import PeftModel

    from core.llm.adapters import plain_copy

    base = plain_copy(loaded.model)
    model = PeftModel.from_pretrained(base, paths[0], adapter_name="p0")
    for i, p in enumerate(paths[1:], start=1):
        model.load_adapter(p, adapter_name=f"p{i}")
    tok = loaded.tokenizer
    tok.padding_side = "left"
    texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    names = [f"p{i}" for i in range(len(chats))]
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            **batch,
            adapter_names=names,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
        )
    elapsed = time.perf_counter() - start
    produced = (out.shape[1] - batch["input_ids"].shape[1]) * len(chats)
    return produced / elapsed, elapsed


def serving(args, settings) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from core.llm.adapters import AdapterRegistry
    from core.llm.engine import Engine
    from core.llm.model import LoadedModel, load_model

    if args.random_weights:
        from transformers import AutoConfig, AutoModelForCausalLM

        loaded = load_model(settings)  # for the tokenizer and config
        cfg = AutoConfig.from_pretrained(loaded.source)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg).to(loaded.dtype).to(loaded.device).eval()
        loaded = LoadedModel(
            model,
            loaded.tokenizer,
            "random SmolLM2-shaped",
            frozenset(),
            loaded.context_length,
            loaded.device,
        )
    else:
        loaded = load_model(settings)
        loaded.eos_token_ids = frozenset()  # every reply runs its full length: equal work per mode
    work = Path(tempfile.mkdtemp(prefix="adapter-bench-"))
    paths = make_adapters(loaded.model, work, args.people)
    reg = AdapterRegistry(loaded.model, settings, max_loaded=max(args.people, 8))
    for i, p in enumerate(paths):
        reg.register(f"person{i}", p)
    engine = Engine(loaded, settings, adapters=reg, max_batch=max(args.people, 8))
    chats = prompts(engine, args.people, args.prompt_tokens)
    people = [f"person{i}" for i in range(args.people)]
    nobody = [None] * args.people

    async def warm():
        await one(engine, chats[0], None, 4)
        await asyncio.gather(*[one(engine, c, a, 2) for c, a in zip(chats, people, strict=True)])

    asyncio.run(warm())
    rows = []
    # interleaved rounds, median of each: on a shared machine the load drifts between runs
    runs: dict[str, list[tuple[float, float, float]]] = {"ceiling": [], "mixed": [], "sequential": []}
    for _ in range(args.rounds):
        runs["ceiling"].append(asyncio.run(run_concurrent(engine, chats, nobody, args.new_tokens)))
        runs["mixed"].append(asyncio.run(run_concurrent(engine, chats, people, args.new_tokens)))
        runs["sequential"].append(asyncio.run(run_sequential(engine, chats, people, args.new_tokens)))

    def med(key: str) -> tuple[float, float, float]:
        return tuple(statistics.median(r[i] for r in runs[key]) for i in range(3))  # type: ignore[return-value]

    ceiling, mixed, sequential = med("ceiling"), med("mixed"), med("sequential")
    rows.append(("batch, adapters off (ceiling)", ceiling))
    rows.append(("batch, 8 different adapters (ours)", mixed))
    rows.append(("one at a time, own adapter each", sequential))
    table = Table(
        title=f"{args.people} people at once, {loaded.name}, {loaded.dtype}, {loaded.device}, "
        f"{torch.get_num_threads()} threads, {args.prompt_tokens}-token prompts, {args.new_tokens} new tokens each, "
        f"median of {args.rounds} interleaved rounds"
    )
    for col in ("mode", "aggregate tok/s", "p95 first token s", "wall s", "vs sequential", "vs ceiling"):
        table.add_column(col, justify="right")
    if args.peft:
        rate, elapsed = peft_batch(loaded, paths, chats, args.new_tokens, loaded.device)
        rows.append(("PEFT generate(adapter_names=...) batch", (rate, float("nan"), elapsed)))
    for name, (rate, ttft, elapsed) in rows:
        table.add_row(
            name,
            f"{rate:.1f}",
            f"{ttft:.2f}",
            f"{elapsed:.1f}",
            f"{rate / sequential[0]:.2f}x",
            f"{rate / ceiling[0]:.2f}",
        )
    console.print(table)
    targets.check(
        f"{args.people} adapters at once vs one at a time, tok/s ratio",
        round(mixed[0] / sequential[0], 2),
        ">=",
        TARGET_VS_SEQUENTIAL,
    )
    targets.check(
        f"{args.people} adapters at once vs adapters off, tok/s ratio",
        round(mixed[0] / ceiling[0], 2),
        ">=",
        TARGET_VS_CEILING,
    )

    # loading and swapping
    loads = []
    for _ in range(3):
        for i in range(args.people):
            reg._lru.clear()
            reg._free = list(range(reg.max_loaded, 0, -1))
            reg._bytes.clear()
            t = time.perf_counter()
            slot = reg.acquire(f"person{i}")
            loads.append(time.perf_counter() - t)
            reg.release(slot)

    async def swap_cost() -> tuple[float, float]:
        reg._lru.clear()
        reg._free = list(range(reg.max_loaded, 0, -1))
        reg._bytes.clear()
        cold, warm_ = [], []
        for out in (cold, warm_):
            for i in range(args.people):
                _fresh(engine)  # a full prefill each time: only the adapter's residency differs
                out.append(await one(engine, chats[0], f"person{i}", 1))
        return statistics.median(c[0] for c in cold), statistics.median(w[0] for w in warm_)

    cold, warm_ttft = asyncio.run(swap_cost())
    engine.close()
    disk = sum(f.stat().st_size for f in paths[0].iterdir())
    module = next(iter(reg._modules.values()))
    slot_bytes = sum(
        m.lora_a[0].numel() * m.lora_a.element_size() + m.lora_b[0].numel() * m.lora_b.element_size()
        for m in reg._modules.values()
    )
    del module
    t2 = Table(title="Adapters: loading and size (rank 8, q/k/v/o)")
    for col in (
        "adapter load = swap p50 ms",
        "first token, adapter not loaded s",
        "first token, adapter resident s",
        "cold - resident first token ms (noisy)",
        "bytes on disk",
        "bytes per serving slot",
    ):
        t2.add_column(col, justify="right")
    t2.add_row(
        f"{statistics.median(loads) * 1000:.1f}",
        f"{cold:.3f}",
        f"{warm_ttft:.3f}",
        f"{(cold - warm_ttft) * 1000:.1f}",
        f"{disk:,}",
        f"{slot_bytes:,} (max rank {reg.rank})",
    )
    console.print(t2)
    targets.check("adapter load p50, ms", round(statistics.median(loads) * 1000, 1), "<", TARGET_LOAD_MS)


_TRAIN = """
import json, random, resource, sys, tempfile, time
from pathlib import Path
from core.config import Settings
from workers.replay import context_pairs, replay_sets
from workers.training import (Pair, answer_forms, evaluate_gate, questions_for, torch_threads, train_dtype,
                              train_lora, training_model)
from bench.personal_cases import FACTS
settings = Settings()
mode, n = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter()
loaded = training_model(settings)
dtype = train_dtype(settings.adapter_train_dtype, loaded.device)
pairs = []
for template, _, values in FACTS:
    for v in values:
        statement = template.format(v)
        answers = answer_forms(statement)
        for j, q in enumerate(questions_for(statement)):
            pairs.append(Pair(q, answers[j % 2]))
            pairs.append(Pair("Quick question: " + q[0].lower() + q[1:], answers[(j + 1) % 2]))
random.Random(0).shuffle(pairs)
held = pairs[n : n + 40]
replay, general = replay_sets()
ratio = settings.adapter_replay_ratio
tok, system, eos = loaded.tokenizer, settings.persona, loaded.tokenizer.eos_token_id


def mix(train):
    k = min(len(replay), int(len(train) * ratio / (1 - ratio)))
    return train + random.Random(1).sample(replay, k) + context_pairs(round(len(train) * settings.adapter_context_share))


def train(data, init_from=None, max_steps=settings.adapter_max_steps):
    start = time.perf_counter()
    with torch_threads(settings.adapter_train_threads):
        cand = train_lora(loaded.model, tok, data, system=system, eos_id=eos, rank=settings.adapter_rank,
                          epochs=settings.adapter_train_epochs, min_steps=settings.adapter_min_steps,
                          max_steps=max_steps, init_from=init_from, dtype=dtype,
                          batch_size=settings.adapter_batch_size, lr=settings.adapter_lr,
                          adaptive_threads=settings.adapter_train_threads == 0)
    used = cand.threads_used
    out["mean_threads"] = sum(used) / len(used) if used else settings.adapter_train_threads
    return cand, time.perf_counter() - start


def gate(cand, reference=None):
    start = time.perf_counter()
    with torch_threads(settings.adapter_train_threads):
        g = evaluate_gate(cand, tok, held, general, system=system, eos_id=eos,
                          tolerance=settings.adapter_ppl_tolerance, reference=reference)
    return g.as_dict(), time.perf_counter() - start


out = {"dtype": str(dtype).replace("torch.", "")}
if mode == "refresh":
    mixed = mix(pairs[:n])
    t1 = time.perf_counter()
    cand, train_s = train(mixed)
    g, gate_s = gate(cand)
    out.update({"pairs": n, "replay": len(mixed) - n, "train_s": train_s, "gate_s": gate_s,
                "total_s": time.perf_counter() - t0,
                "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "gate": g})
else:  # continue vs scratch: v1 on the first half, then v2 on everything
    half = n // 2
    v1, v1_s = train(mix(pairs[:half]))
    prev = Path(tempfile.mkdtemp()) / "v1"
    v1.save_pretrained(prev)
    out["v1"] = {"pairs": half, "train_s": v1_s, "gate": gate(v1)[0]}
    for label, init, steps in (("scratch", None, settings.adapter_max_steps),
                               ("continue", prev, settings.adapter_max_steps),
                               ("continue, half the steps", prev, settings.adapter_max_steps // 2)):
        cand, train_s = train(mix(pairs[:n]), init_from=init, max_steps=steps)
        out[label] = {"pairs": n, "train_s": train_s, "gate": gate(cand)[0], "vs_v1": gate(cand, prev)[0]}
print(json.dumps(out))
"""


def _run_training(args, mode: str) -> dict | None:
    env = {**os.environ, "CONFIDANTE_DATA_DIR": str(args.data_dir), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", _TRAIN, mode, str(args.pairs)], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        console.print(f"[red]training run failed[/]\n{out.stderr[-2000:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def training(args) -> None:
    s = Settings()
    r = _run_training(args, "refresh")
    if r is None:
        targets.check("refresh ran", 0, "==", 1)
        return
    table = Table(
        title=f"Adapter refresh on {r['pairs']} Q->A pairs (+{r['replay']} replay and made-up recall examples), fresh process, "
        f"{r['dtype']} base, {s.adapter_train_epochs} epochs capped at {s.adapter_max_steps} steps of "
        f"{s.adapter_batch_size}, torch threads: "
        + (
            f"{s.adapter_train_threads}"
            if s.adapter_train_threads
            else f"adaptive (mean {r['mean_threads']:.2f})"
        )
    )
    for col in (
        "train s",
        "gate s",
        "total s (incl. model load)",
        "peak RSS MB",
        "held-out NLL before->after",
        "general ppl change",
        "gate",
    ):
        table.add_column(col, justify="right")
    g = r["gate"]
    table.add_row(
        f"{r['train_s']:.0f}", f"{r['gate_s']:.0f}", f"{r['total_s']:.0f}", f"{r['peak_mb']:.0f}",
        f"{g['heldout_nll_before']:.2f} -> {g['heldout_nll_after']:.2f}", f"{g['general_ppl_change']:+.1%}",
        "pass" if g["passed"] else f"reject: {g['reason']}",
    )  # fmt: skip
    console.print(table)
    targets.check("refresh total (incl. model load), s", round(r["total_s"]), "<", TARGET_REFRESH_S)
    targets.check("refresh peak RSS, MB", round(r["peak_mb"]), "<", TARGET_REFRESH_MB)


def continue_or_scratch(args) -> None:
    r = _run_training(args, "continue")
    if r is None:
        return
    v1 = r["v1"]
    table = Table(
        title=f"Second refresh: continue from the previous version or train from scratch "
        f"(v1 trained on {v1['pairs']} pairs, v2 on {args.pairs}; {r['dtype']} base, "
        f"mean torch threads {r['mean_threads']:.2f}); held-out and general sets fixed"
    )
    for col in (
        "v2 trained",
        "train s",
        "held-out NLL (base -> v2)",
        "held-out NLL (v1 -> v2)",
        "general ppl change vs base",
    ):
        table.add_column(col, justify="right")
    g1 = v1["gate"]
    table.add_row(
        f"(v1, scratch on {v1['pairs']})", f"{v1['train_s']:.0f}",
        f"{g1['heldout_nll_before']:.3f} -> {g1['heldout_nll_after']:.3f}", "", f"{g1['general_ppl_change']:+.1%}",
    )  # fmt: skip
    for label in ("scratch", "continue", "continue, half the steps"):
        x = r[label]
        g, vs = x["gate"], x["vs_v1"]
        table.add_row(
            label, f"{x['train_s']:.0f}", f"{g['heldout_nll_before']:.3f} -> {g['heldout_nll_after']:.3f}",
            f"{vs['heldout_nll_before']:.3f} -> {vs['heldout_nll_after']:.3f}", f"{g['general_ppl_change']:+.1%}",
        )  # fmt: skip
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Settings().data_dir)
    parser.add_argument("--people", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=200, help="personal Q->A pairs to train on")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads for serving (0: torch's default)"
    )
    parser.add_argument("--random-weights", action="store_true", help="random SmolLM2-shaped weights")
    parser.add_argument("--peft", action="store_true", help="also time PEFT's adapter_names batch")
    parser.add_argument("--skip-serving", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-continue", action="store_true", help="skip continue-vs-scratch (3 trainings)")
    args = parser.parse_args()
    settings = Settings(data_dir=args.data_dir, device=args.device, dtype=args.dtype)
    if not args.skip_serving:
        serving(args, settings)
    if not args.skip_training:
        training(args)
    if not args.skip_continue:
        continue_or_scratch(args)
    targets.exit()


if __name__ == "__main__":
    main()
