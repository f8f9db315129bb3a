"""Load test: simulated people talking to `confidante run`, through Telegram: one process, then
two on the same data dir (the load tool sends each message to the next process in turn, as a
round-robin load balancer in front of the webhook would).

The real command in its own process (the configured model, LanceDB, the journal, the embedded
worker), with Telegram in webhook mode pointed at the local fake Bot API
(tests/telegram/fake_bot_api.py). Each simulated person writes in a direct chat, waits for the
whole reply, and writes again. Measured here, from the load tool's side: time from the webhook
POST to the first streamed text (a draft or message) and to the final message; throughput;
the process's peak RSS (VmHWM, plus its worker subprocess). Then /metrics is scraped and its
counts must agree with what the tool saw.

    python bench/load_test.py                           # 50 people x 6 messages, bundled SmolLM2
    python bench/load_test.py --people 10 --messages 3  # smaller
    python bench/load_test.py --processes 2             # only the two-process row
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from bench.targets import Targets
from bench.telegram_first_text import free_port

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.telegram.fake_bot_api import TOKEN, FakeBotAPI, message, private_chat, user  # noqa: E402

SECRET = "loadtest"
LINES = [
    "Hi! I'm {name} and I keep bees on my roof.",
    "What should I plant so the bees have flowers in autumn?",
    "I also started learning the cello last month.",
    "Any tip for practising when I only have twenty minutes?",
    "What do you remember about my hobbies?",
    "Thanks, talk tomorrow.",
]
TARGETS = {"ttft_p95_s": 10.0, "reply_p95_s": 30.0}  # on 2 shared CPU cores, bundled model


@dataclass
class Waiting:
    sent_at: float
    first: float | None = None
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _rss_mib(pid: int) -> dict[str, float]:
    """Peak resident memory of the process and its children (the embedded worker), in MiB."""
    out = {}
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    for p in [str(pid), *kids]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out[p] = int(line.split()[1]) / 1024
        except OSError:
            pass
    return out


def _counts(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def run(
    processes: int,
    people: int,
    messages: int,
    max_new_tokens: int,
    models_dir: Path,
    model: str | None,
    broker_url: str,
) -> dict:
    """The load against `processes` chat processes on one data dir; what the tool and /metrics saw."""
    api = FakeBotAPI()
    await api.start()
    hooks, ops = [free_port() for _ in range(processes)], [free_port() for _ in range(processes)]
    loop = asyncio.get_running_loop()
    waiting: dict[int, Waiting] = {}

    async def tail() -> None:  # reads the fake's calls as they come; times are the fake's own
        seen = 0
        while True:
            new = api.calls[seen:]
            seen += len(new)
            for call in new:
                w = waiting.get(call.params.get("chat_id"))
                if w is None or call.at < w.sent_at or w.done.done():
                    continue
                if call.method in ("sendMessageDraft", "sendMessage") and call.params.get("text"):
                    w.first = w.first or call.at
                if call.method == "sendMessage":
                    w.done.set_result(call.at)
            await asyncio.sleep(0.01)

    with tempfile.TemporaryDirectory() as tmp:
        base = {
            k: v for k, v in os.environ.items() if not k.startswith(("CONFIDANTE_", "TELEGRAM_", "SLACK_"))
        }
        base.update(
            PYTHONPATH=str(ROOT),
            CONFIDANTE_DATA_DIR=f"{tmp}/data",
            CONFIDANTE_MODEL_CACHE_DIR=str(models_dir),
            CONFIDANTE_MAX_NEW_TOKENS=str(max_new_tokens),
            **({"CONFIDANTE_MODEL": model} if model else {}),
            CONFIDANTE_RATE_PER_MINUTE_PERSON="1000",
            TELEGRAM_BOT_TOKEN=TOKEN,
            CONFIDANTE_TELEGRAM_API_URL=api.base_url,
            CONFIDANTE_TELEGRAM_WEBHOOK_URL="https://load.example.org/tg",
            CONFIDANTE_TELEGRAM_WEBHOOK_SECRET=SECRET,
        )
        if processes > 1:
            # several chat processes: Redis and one worker for all (infra/README.md), not an
            # embedded worker each
            import redis

            redis.Redis.from_url(broker_url).flushdb()
            base["CONFIDANTE_BROKER_URL"] = broker_url
            # the cores shared out: torch's threads in each process otherwise wait on each other
            base["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
        logs = [open(f"{tmp}/run{i}.log", "wb") for i in range(processes)]  # noqa: SIM115 - children write them
        started = time.perf_counter()
        workers = (
            [
                subprocess.Popen(
                    [sys.executable, "-c", "from app.cli import app; app()", "worker"],
                    env=base,
                    cwd=tmp,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            ]
            if processes > 1
            else []
        )
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", "from app.cli import app; app()", "run"],
                env={
                    **base,
                    "CONFIDANTE_OPS_PORT": str(ops[i]),
                    "CONFIDANTE_TELEGRAM_WEBHOOK_PORT": str(hooks[i]),
                },
                cwd=tmp,
                stdout=logs[i],
                stderr=subprocess.STDOUT,
            )
            for i in range(processes)
        ]
        tailer = asyncio.create_task(tail())
        try:
            async with httpx.AsyncClient(timeout=600) as http:

                async def scrape() -> dict[tuple[str, tuple], float]:
                    total: dict[tuple[str, tuple], float] = {}
                    for port in ops:
                        for key, value in _counts(
                            (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                        ).items():
                            total[key] = total.get(key, 0.0) + value
                    return total

                for i, proc in enumerate(procs):  # ready: model loaded, webhook registered
                    while True:
                        if proc.poll() is not None:
                            raise SystemExit(Path(f"{tmp}/run{i}.log").read_text()[-3000:])
                        try:
                            ready = (await http.get(f"http://127.0.0.1:{ops[i]}/readyz")).status_code == 200
                        except httpx.HTTPError:
                            ready = False
                        if ready and api.webhook:
                            break
                        await asyncio.sleep(0.5)
                startup = time.perf_counter() - started
                before = await scrape()
                ttft: list[float] = []
                whole: list[float] = []
                update_ids = iter(range(1, 10**9))

                async def person(n: int) -> None:
                    who = user(500_000 + n, f"P{n}")
                    for i in range(messages):  # the balancer: each message to the next process
                        text = LINES[i % len(LINES)].format(name=who["first_name"])
                        update = {
                            "update_id": next(update_ids),
                            "message": message(private_chat(who), who, text, message_id=1000 + i),
                        }
                        w = waiting[who["id"]] = Waiting(loop.time())
                        response = await http.post(
                            f"http://127.0.0.1:{hooks[(n + i) % processes]}/tg",
                            content=json.dumps(update),
                            headers={
                                "Content-Type": "application/json",
                                "X-Telegram-Bot-Api-Secret-Token": SECRET,
                            },
                        )
                        response.raise_for_status()
                        done = await asyncio.wait_for(w.done, 600)
                        ttft.append((w.first or done) - w.sent_at)
                        whole.append(done - w.sent_at)

                t0 = time.perf_counter()
                await asyncio.gather(*(person(n) for n in range(people)))
                wall = time.perf_counter() - t0
                await asyncio.sleep(1.5)  # the last stream's counters settle
                after = await scrape()
                rss = [_rss_mib(proc.pid) for proc in procs]
                external = sum(sum(_rss_mib(w.pid).values()) for w in workers)
                extra = sum(1 for c in api.calls if c.method == "sendMessage" and c.status == 200) - len(
                    whole
                )
        finally:
            tailer.cancel()
            for proc in [*procs, *workers]:
                proc.send_signal(signal.SIGTERM)
            for proc in [*procs, *workers]:
                try:
                    proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
            for log in logs:
                log.close()
            if os.environ.get("LOAD_TEST_LOGS"):  # keep the processes' logs for a look afterwards
                import shutil

                for i in range(processes):
                    shutil.copy(
                        f"{tmp}/run{i}.log", f"{os.environ['LOAD_TEST_LOGS']}/{processes}p-run{i}.log"
                    )
            await api.stop()

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    return {
        "sent": people * messages,
        "ttft": ttft,
        "whole": whole,
        "startup": startup,
        "wall": wall,
        "extra": extra,
        "chat_rss": sum(r.get(str(p.pid), float("nan")) for r, p in zip(rss, procs, strict=True)),
        "worker_rss": external
        + sum(v for r, p in zip(rss, procs, strict=True) for k, v in r.items() if k != str(p.pid)),
        "tokens": delta("confidante_tokens_generated_total"),
        "agree": {
            "messages replied": (
                delta("confidante_messages_total", platform="telegram", outcome="replied"),
                len(whole),
            ),
            "first-token samples": (delta("confidante_stage_seconds_count", stage="first_token"), len(ttft)),
            "full-reply samples": (delta("confidante_stage_seconds_count", stage="reply"), len(whole)),
        },
    }


async def main(
    counts: list[int],
    people: int,
    messages: int,
    max_new_tokens: int,
    models_dir: Path,
    model: str | None,
    broker_url: str,
) -> int:
    results = {
        n: await run(n, people, messages, max_new_tokens, models_dir, model, broker_url) for n in counts
    }
    names = {1: "one process", 2: "two processes", 3: "three processes"}
    table = Table(
        title=f"Load: {people} people x {messages} messages, `confidante run` on one data dir, "
        f"max_new_tokens={max_new_tokens}"
    )
    table.add_column("measure")
    for n in counts:
        table.add_column(names.get(n, f"{n} processes"), justify="right")

    def row(label: str, fmt) -> None:
        table.add_row(label, *(fmt(results[n]) for n in counts))

    row("messages sent / replies seen", lambda r: f"{r['sent']} / {len(r['whole'])}")
    row("replies beyond one per message", lambda r: f"{r['extra']}")
    row("start-up to ready (s)", lambda r: f"{r['startup']:.1f}")
    row("wall time (s)", lambda r: f"{r['wall']:.1f}")
    row("throughput (replies/s)", lambda r: f"{len(r['whole']) / r['wall']:.2f}")
    for q in (50, 95, 99):
        row(f"first text p{q} (s)", lambda r, q=q: f"{_pct(r['ttft'], q):.2f}")
    for q in (50, 95, 99):
        row(f"full reply p{q} (s)", lambda r, q=q: f"{_pct(r['whole'], q):.2f}")
    row("peak RSS, chat process(es) (MiB)", lambda r: f"{r['chat_rss']:.0f}")
    row("peak RSS, worker process(es) (MiB)", lambda r: f"{r['worker_rss']:.0f}")
    row("tokens generated (/metrics)", lambda r: f"{r['tokens']:.0f}")
    for name in ("messages replied", "first-token samples", "full-reply samples"):
        row(
            f"/metrics {name} vs load tool",
            lambda r, name=name: (
                f"{r['agree'][name][0]:.0f} vs {r['agree'][name][1]} "
                + ("ok" if r["agree"][name][0] == r["agree"][name][1] else "DIFFERS")
            ),
        )
    Console().print(table)
    targets = Targets("load_test targets")
    for n in counts:
        r, name = results[n], names.get(n, n)
        targets.check(
            f"{name}: first token p95, s", round(_pct(r["ttft"], 95), 2), "<=", TARGETS["ttft_p95_s"]
        )
        targets.check(
            f"{name}: full reply p95, s", round(_pct(r["whole"], 95), 2), "<=", TARGETS["reply_p95_s"]
        )
        targets.check(
            f"{name}: replies received / messages sent", len(r["whole"]) / max(1, r["sent"]), "==", 1
        )
        targets.check(f"{name}: replies beyond one per message", r["extra"], "==", 0)
        targets.check(
            f"{name}: /metrics counts that differ from the load tool",
            sum(s != c for s, c in r["agree"].values()),
            "==",
            0,
        )
    return targets.report()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--processes", type=int, nargs="+", default=[1, 2], help="chat processes on one data dir, per run"
    )
    parser.add_argument(
        "--broker-url",
        default=f"redis://127.0.0.1:6379/{os.environ.get('CONFIDANTE_TEST_REDIS_DB', '15')}",
        help="Redis for several processes (flushed first)",
    )
    parser.add_argument("--people", type=int, default=50)
    parser.add_argument("--messages", type=int, default=6, help="per person")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--model", help="a model directory (default: the bundled SmolLM2)")
    parser.add_argument(
        "--models-dir", type=Path, default=ROOT / "data" / "models", help="converted model cache"
    )
    args = parser.parse_args()
    sys.exit(
        asyncio.run(
            main(
                args.processes,
                args.people,
                args.messages,
                args.max_new_tokens,
                args.models_dir,
                args.model,
                args.broker_url,
            )
        )
    )
