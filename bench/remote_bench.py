"""People on their own adapters through a real vLLM server vs our CPU engine, same prompts.

Usage: python bench/remote_bench.py [--people 1,8,32] [--adapters 8] [--tokens 64] [--url URL]

Each of N people sends one message at the same moment; person i uses adapter i % 8. Both sides
generate greedily with the same weights (the bundled model, float32) and the same adapters; a
reply's tokens are counted with the model's tokenizer. Reported per side and N: aggregate
tokens/s (all tokens / wall time), p50 and p95 time to first token. Without --url the bench starts
its own vLLM (CPU build, infra/vllm) with a LoRA slot per adapter. Run it under the CPU lock:
vLLM reserves one core for its API server and computes on the other; our engine uses both.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.config import Settings  # noqa: E402
from core.llm.adapters import AdapterStore, plain_copy  # noqa: E402
from core.llm.served_adapters import ServedAdapters  # noqa: E402
from infra.vllm.server import SERVED_NAME, VLLMServer, bundled_model_dir  # noqa: E402

QUESTIONS = [
    "What should I cook tonight? Answer in two sentences.",
    "Give me one tip for sleeping better.",
    "How do I keep a sourdough starter alive?",
    "What is a good way to start running?",
    "Suggest a short book for a train ride.",
    "How can I remember people's names?",
    "What should I pack for a weekend hike?",
    "How do I politely decline a meeting?",
]


def make_adapters(settings: Settings, model, count: int) -> list[str]:
    """`count` people, each with a promoted random rank-8 adapter, published to the server."""
    import torch
    from peft import LoraConfig, get_peft_model

    store, served, people = AdapterStore(settings), ServedAdapters(settings), []
    for i in range(count):
        person = f"person{i}"
        name, tmp = store.new_version_dir(person)
        torch.manual_seed(1000 + i)
        config = LoraConfig(
            r=8,
            lora_alpha=16,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            init_lora_weights=False,
        )
        peft_model = get_peft_model(plain_copy(model), config)
        with torch.no_grad():
            for pname, p in peft_model.named_parameters():
                if "lora_" in pname:
                    p.mul_(0.7)
        peft_model.save_pretrained(tmp)
        store.commit_version(person, name, tmp, {"status": "current", "sources": []})
        store.set_current(person, name)
        if served.mode != "none":
            assert served.publish(person), "the server did not take the adapter"
        people.append(person)
    return people


async def one(engine, messages, person, tokens: int, start: float) -> tuple[float, str]:
    first = None
    parts = []
    async for delta in engine.stream(messages, adapter=person, temperature=0.0, max_new_tokens=tokens):
        if first is None:
            first = time.perf_counter() - start
        parts.append(delta)
    return (first if first is not None else float("nan")), "".join(parts)


async def burst(engine, people: list[str], n: int, tokens: int, count) -> dict[str, float]:
    jobs = []
    start = time.perf_counter()
    for i in range(n):
        messages = [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]
        jobs.append(one(engine, messages, people[i % len(people)], tokens, start))
    results = await asyncio.gather(*jobs)
    wall = time.perf_counter() - start
    ttft = sorted(r[0] for r in results)
    generated = sum(count(r[1]) for r in results)
    return {
        "tok_s": generated / wall,
        "p50": statistics.median(ttft),
        "p95": ttft[min(len(ttft) - 1, round(0.95 * (len(ttft) - 1)))],
        "tokens": generated,
        "wall": wall,
    }


async def run_side(engine, people, levels, tokens, count) -> dict[int, dict[str, float]]:
    await burst(engine, people, len(people), 8, count)  # warm-up: adapters loaded, caches built
    return {n: await burst(engine, people, n, tokens, count) for n in levels}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", default="1,8,32")
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--url", help="a running vLLM server (else one is started)")
    args = parser.parse_args()
    levels = [int(x) for x in args.people.split(",")]

    import torch

    from core.llm.engine import Engine
    from core.llm.model import load_model
    from core.llm.remote import RemoteEngine

    model_dir = bundled_model_dir()
    server = None
    if args.url is None:
        server = VLLMServer(model_dir, max_loras=args.adapters + 1)  # + the zero adapter
        server.launch()
        server.wait_ready()
        print(f"vLLM answered {server.start_seconds:.1f} s after launch", file=sys.stderr)
    url = args.url or server.url
    try:
        data = Path(tempfile.mkdtemp(prefix="confidante-remote-bench-"))
        settings = Settings(
            data_dir=data,
            generation_url=url + "/v1",
            generation_model=SERVED_NAME,
            generation_tokenizer=str(model_dir),
            max_batch=32,
            _env_file=None,
        )
        local = load_model(Settings(model=str(model_dir), dtype="float32", device="cpu", _env_file=None))
        people = make_adapters(settings, local.model, args.adapters)

        def count(text: str) -> int:
            return len(local.tokenizer(text, add_special_tokens=False)["input_ids"])

        remote = RemoteEngine(settings)
        served = asyncio.run(run_side(remote, people, levels, args.tokens, count))
        asyncio.run(remote.aclose())
        torch.set_num_threads(2)
        ours_engine = Engine(local, settings)
        ours = asyncio.run(run_side(ours_engine, people, levels, args.tokens, count))
        ours_engine.close()
    finally:
        if server is not None:
            server.stop()

    print(
        f"\n{args.adapters} adapters (rank 8), greedy, up to {args.tokens} new tokens a reply, float32, "
        "the bundled SmolLM2-135M; N people send at once, person i on adapter i % 8\n"
    )
    print("| people | side | aggregate tok/s | p50 TTFT s | p95 TTFT s | tokens | wall s |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for n in levels:
        for side, table in (("vLLM (CPU build)", served), ("our CPU engine", ours)):
            r = table[n]
            print(
                f"| {n} | {side} | {r['tok_s']:.1f} | {r['p50']:.2f} | {r['p95']:.2f} | "
                f"{r['tokens']} | {r['wall']:.1f} |"
            )
    top = max(levels)
    ratio = served[top]["tok_s"] / ours[top]["tok_s"]
    print(
        f"\nat {top} people vLLM gives {ratio:.2f}x our engine's aggregate tok/s "
        f"({'vLLM ahead' if ratio > 1 else 'our engine ahead'} on this CPU); "
        "target (issue 18): every person served by their own adapter in one batch - checked by "
        "tests/remote/test_vllm.py, not here"
    )


if __name__ == "__main__":
    main()
