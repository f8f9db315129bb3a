"""Load test: simulated people talking to one `confidante run` process, through Telegram.

The real command in its own process (the configured model, LanceDB, the journal, the embedded
worker), with Telegram in webhook mode pointed at the local fake Bot API
(tests/telegram/fake_bot_api.py). Each simulated person writes in a direct chat, waits for the
whole reply, and writes again. Measured here, from the load tool's side: time from the webhook
POST to the first streamed text (a draft or message) and to the final message; throughput;
the process's peak RSS (VmHWM, plus its worker subprocess). Then /metrics is scraped and its
counts must agree with what the tool saw.

    python bench/load_test.py                           # 50 people x 6 messages, bundled SmolLM2
    python bench/load_test.py --people 10 --messages 3  # smaller
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
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


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


async def main(people: int, messages: int, max_new_tokens: int, models_dir: Path, model: str | None) -> int:
    api = FakeBotAPI()
    await api.start()
    hook, ops = _port(), _port()
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
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("CONFIDANTE_", "TELEGRAM_", "SLACK_"))
        }
        env.update(
            PYTHONPATH=str(ROOT),
            CONFIDANTE_DATA_DIR=f"{tmp}/data",
            CONFIDANTE_MODEL_CACHE_DIR=str(models_dir),
            CONFIDANTE_MAX_NEW_TOKENS=str(max_new_tokens),
            **({"CONFIDANTE_MODEL": model} if model else {}),
            CONFIDANTE_OPS_PORT=str(ops),
            CONFIDANTE_RATE_PER_MINUTE_PERSON="1000",
            TELEGRAM_BOT_TOKEN=TOKEN,
            CONFIDANTE_TELEGRAM_API_URL=api.base_url,
            CONFIDANTE_TELEGRAM_WEBHOOK_URL="https://load.example.org/tg",
            CONFIDANTE_TELEGRAM_WEBHOOK_SECRET=SECRET,
            CONFIDANTE_TELEGRAM_WEBHOOK_PORT=str(hook),
        )
        log = open(f"{tmp}/run.log", "wb")  # noqa: SIM115 - the child writes it
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", "from app.cli import app; app()", "run"],
            env=env,
            cwd=tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        tailer = asyncio.create_task(tail())
        try:
            async with httpx.AsyncClient(timeout=600) as http:
                while True:  # ready: model loaded, webhook registered
                    if proc.poll() is not None:
                        raise SystemExit(Path(f"{tmp}/run.log").read_text()[-3000:])
                    try:
                        ready = (await http.get(f"http://127.0.0.1:{ops}/readyz")).status_code == 200
                    except httpx.HTTPError:
                        ready = False
                    if ready and api.webhook:
                        break
                    await asyncio.sleep(0.5)
                startup = time.perf_counter() - started
                before = _counts((await http.get(f"http://127.0.0.1:{ops}/metrics")).text)
                ttft: list[float] = []
                whole: list[float] = []
                update_ids = iter(range(1, 10**9))

                async def person(n: int) -> None:
                    who = user(500_000 + n, f"P{n}")
                    for i in range(messages):
                        text = LINES[i % len(LINES)].format(name=who["first_name"])
                        update = {
                            "update_id": next(update_ids),
                            "message": message(private_chat(who), who, text, message_id=1000 + i),
                        }
                        w = waiting[who["id"]] = Waiting(loop.time())
                        response = await http.post(
                            f"http://127.0.0.1:{hook}/tg",
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
                after = _counts((await http.get(f"http://127.0.0.1:{ops}/metrics")).text)
                rss = _rss_mib(proc.pid)
        finally:
            tailer.cancel()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
            await api.stop()

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    sent = people * messages
    table = Table(
        title=f"Load: {people} people x {messages} messages, one `confidante run`, max_new_tokens={max_new_tokens}"
    )
    for col in ("measure", "value"):
        table.add_column(col, justify="right" if col == "value" else "left")
    rows = [
        ("messages sent / replies seen", f"{sent} / {len(whole)}"),
        ("start-up to ready (s)", f"{startup:.1f}"),
        ("wall time (s)", f"{wall:.1f}"),
        ("throughput (replies/s)", f"{len(whole) / wall:.2f}"),
        *((f"first text p{q} (s)", f"{_pct(ttft, q):.2f}") for q in (50, 95, 99)),
        *((f"full reply p{q} (s)", f"{_pct(whole, q):.2f}") for q in (50, 95, 99)),
        ("peak RSS, chat process (MiB)", f"{rss.get(str(proc.pid), float('nan')):.0f}"),
        ("peak RSS, worker process(es) (MiB)", f"{sum(v for k, v in rss.items() if k != str(proc.pid)):.0f}"),
        ("tokens generated (/metrics)", f"{delta('confidante_tokens_generated_total'):.0f}"),
    ]
    agree = {
        "messages replied": (
            delta("confidante_messages_total", platform="telegram", outcome="replied"),
            len(whole),
        ),
        "first-token samples": (delta("confidante_stage_seconds_count", stage="first_token"), len(ttft)),
        "full-reply samples": (delta("confidante_stage_seconds_count", stage="reply"), len(whole)),
    }
    for name, (scraped, counted) in agree.items():
        rows.append(
            (
                f"/metrics {name} vs load tool",
                f"{scraped:.0f} vs {counted} {'ok' if scraped == counted else 'DIFFERS'}",
            )
        )
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    targets = Targets("load_test targets")
    targets.check("first token p95, s", round(_pct(ttft, 95), 2), "<=", TARGETS["ttft_p95_s"])
    targets.check("full reply p95, s", round(_pct(whole, 95), 2), "<=", TARGETS["reply_p95_s"])
    targets.check("replies received / messages sent", len(whole) / max(1, sent), "==", 1)
    targets.check(
        "/metrics counts that differ from the load tool", sum(s != c for s, c in agree.values()), "==", 0
    )
    return targets.report()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", type=int, default=50)
    parser.add_argument("--messages", type=int, default=6, help="per person")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--model", help="a model directory (default: the bundled SmolLM2)")
    parser.add_argument(
        "--models-dir", type=Path, default=ROOT / "data" / "models", help="converted model cache"
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.people, args.messages, args.max_new_tokens, args.models_dir, args.model)))
