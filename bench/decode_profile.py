"""Where a decode step's time goes: the engine's step driven directly, timed, then profiled.

Usage: python bench/decode_profile.py [--path kernel|lean|transformers] [--rows 1] [--steps 40]
Prints ms per step (best and median of 5 runs of `steps` steps; a shared machine only ever
slows a run down) and torch.profiler's top ops by self time over 20 steps. The step's parts are
labelled (`step:` rows): their self time is what runs outside torch ops (Python, and the block
kernels, which are C calls torch does not see), so the table adds up to the whole step.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.config import Settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--path", choices=["kernel", "lean", "transformers"], default="kernel")
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from core.llm.engine import Engine, _Request
    from core.llm.model import load_model
    from core.llm.sampling import RowState, Sampling

    settings = Settings(temperature=0)
    engine = Engine(load_model(settings), settings, decode=args.path)
    if args.path == "kernel" and not engine.wait_for_kernel():
        sys.exit("the decode kernel is not available here (CPU without AVX-512, no C compiler?)")
    loop = asyncio.new_event_loop()

    def start() -> None:
        engine._reset_batch()
        for i in range(args.rows):
            text = f"Write a long story about cat number {i} who travels the world."
            ids = engine.encode_messages([{"role": "user", "content": text}])
            engine._prefill(
                _Request(ids, 100_000, RowState(Sampling(temperature=0)), None, loop, asyncio.Queue())
            )

    _label_parts(engine)
    with torch.inference_mode():
        runs = []
        for _ in range(5):
            start()
            for _ in range(5):
                engine._step()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                engine._step()
            runs.append((time.perf_counter() - t0) / args.steps)
        best, median = min(runs), statistics.median(runs)
        print(
            f"{args.path}, {args.rows} row(s), {torch.get_num_threads()} threads: "
            f"{best * 1e3:.1f} ms/step best ({args.rows / best:.1f} tok/s), "
            f"{median * 1e3:.1f} ms median ({args.rows / median:.1f} tok/s)"
        )
        start()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(20):
                engine._step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"top ops by self CPU time over 20 steps ({total / 20 / 1e3:.1f} ms of CPU per step):")
    for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.top]:
        print(
            f"  {e.key:<52} {100 * e.self_cpu_time_total / total:5.1f}%  "
            f"{e.count / 20:6.1f} calls/step  {e.self_cpu_time_total / max(e.count, 1):8.1f} us/call"
        )
    engine.close()
    loop.close()


def _label_parts(engine) -> None:
    """Wrap the step's parts in profiler labels (costs ~1 us a call; only in this bench)."""
    from torch.profiler import record_function

    from core.llm import blockq

    def labelled(name, fn):
        def run(*args, **kwargs):
            with record_function(name):
                return fn(*args, **kwargs)

        return run

    engine._step = labelled("step: whole step (engine bookkeeping)", engine._step)
    engine._logits = labelled("step: output head", engine._logits)
    engine._sample = labelled("step: sampler", engine._sample)
    engine._emit = labelled("step: emit (detokenize, stop checks)", engine._emit)
    if engine._lean is not None:
        engine._lean.step = labelled("step: decoder layers (Python)", engine._lean.step)
    call = blockq.BlockMatrix.__call__
    blockq.BlockMatrix.__call__ = lambda self, x: labelled("step: block kernel (C)", call)(self, x)


if __name__ == "__main__":
    main()
