"""Matrix: how long a person waits, end to end, on a real local Synapse.

Starts a throwaway Synapse (infra/synapse), the bot with the real Assistant on the bundled
model (or `--tiny` for the random test model), and one person (a nio client) who sends N
direct messages. Times, from the person's send: the bot's first message (typing already
shown), its first edit, and the final edit. Also Synapse's launch-to-ready time.
`python bench/matrix_latency.py [--messages 5] [--tiny] [--encrypted]`

Targets (2 CPU cores, bundled model, under the CPU lock): the bot's first message within 3 s
of the send (p95; as Telegram's first text, bench/telegram_first_text.py), Matrix's own share
of it (send -> first message minus the model's first token alone, median: the homeserver round
trips, the pipeline before generation, the person's sync) under 1.5 s, and the first edit, when
a reply is long enough to have one, within 5 s (p95).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from nio import RoomMessageText
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.targets import Targets  # noqa: E402
from bots.matrix import MatrixBot  # noqa: E402
from bots.settings import ChannelSettings  # noqa: E402
from core.assistant import build_assistant  # noqa: E402
from tests.matrix.matrix_helpers import Homeserver, Person, content, is_edit, unique  # noqa: E402

QUESTIONS = [
    "What is a good way to start running?",
    "Give me three ideas for a rainy Sunday.",
    "How do I keep a plant alive in winter?",
    "Suggest a short name for a cat.",
    "What should I pack for a weekend hike?",
    "How do I make a good cup of tea?",
    "What is a quick healthy breakfast?",
    "Tell me a fun fact about octopuses.",
]


TARGET_FIRST_MESSAGE_P95_S = 3.0
TARGET_MATRIX_SHARE_S = 1.5
TARGET_FIRST_EDIT_P95_S = 5.0


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def engine_for(settings: ChannelSettings, tiny: bool):
    if not tiny:
        return None  # build_assistant loads the configured (bundled) model
    from core.llm.engine import Engine
    from core.llm.model import tiny_llama

    return Engine(tiny_llama(), settings)


async def main(args: argparse.Namespace) -> Targets:
    console = Console()
    work = Path(tempfile.mkdtemp(prefix="matrix-bench-"))
    hs = Homeserver(work / "synapse")
    hs.start()
    try:
        account = hs.register(unique("confidante"))
        settings = ChannelSettings(
            data_dir=args.data_dir or work / "data",
            model_cache_dir=ROOT / "data" / "models",  # the tests' converted bundled model
            max_new_tokens=args.max_new_tokens,
            _env_file=None,
            matrix={
                "homeserver": hs.url,
                "user_id": account.user_id,
                "password": account.password,
                "sync_timeout_ms": 5000,
            },
        )
        loaded = time.monotonic()
        assistant = build_assistant(settings, engine=engine_for(settings, args.tiny))
        load_s = time.monotonic() - loaded
        bot = MatrixBot(assistant, settings)
        await bot.start()
        person = Person(hs, hs.register(unique("alice")), work / "alice-store" if args.encrypted else None)
        await person.setup()
        room = await person.create_room([account.user_id], direct=True, encrypted=args.encrypted)
        await person.wait_for(
            lambda r, e: r == room and isinstance(e, RoomMessageText) and e.sender == account.user_id,
            60,
            "intro",
        )

        # The model alone on the same machine and moment, to tell Matrix's share from generation's.
        engine_first, engine_all = [], []
        for question in QUESTIONS[: args.messages]:
            t0 = time.monotonic()
            got_first = None
            async for _ in assistant.engine.stream([{"role": "user", "content": question}]):
                got_first = got_first or time.monotonic() - t0
            engine_first.append(got_first or float("nan"))
            engine_all.append(time.monotonic() - t0)

        first, first_edit, final = [], [], []
        for question in QUESTIONS[: args.messages]:
            start = time.monotonic()
            sent = len(person.events)
            await person.say(room, question)
            msg = await person.wait_for(
                lambda r, e, n=sent: (
                    r == room
                    and isinstance(e, RoomMessageText)
                    and e.sender == account.user_id
                    and not is_edit(e)
                    and person.events.index((r, e)) >= n
                ),
                120,
                "first message",
            )
            first.append(time.monotonic() - start)
            edit_seen = None
            quiet_since = last_change = time.monotonic()
            while time.monotonic() - quiet_since < 3.0:  # the stream is done after 3 s without edits
                before = len(person.events)
                await person.sync(500)
                for _, e in person.events[before:]:
                    if is_edit(e) and content(e)["m.relates_to"]["event_id"] == msg.event_id:
                        edit_seen = edit_seen or time.monotonic() - start
                        last_change = time.monotonic()
                        quiet_since = time.monotonic()
            first_edit.append(edit_seen if edit_seen is not None else float("nan"))
            final.append(last_change - start)
        await bot.stop()
        await person.client.close()
        close = getattr(assistant.engine, "close", None)
        if close:
            close()
    finally:
        hs.stop()

    model = "tiny random Llama" if args.tiny else settings.model
    table = Table(
        title=f"Matrix DM latency ({model}, {'encrypted' if args.encrypted else 'plain'} room, "
        f"{args.messages} messages, max_new_tokens={args.max_new_tokens})"
    )
    for col in ("measure", "median s", "min s", "max s"):
        table.add_column(col)
    table.add_row("Synapse launch to ready", f"{hs.start_seconds:.2f}", "", "")
    table.add_row("assistant build (model load)", f"{load_s:.2f}", "", "")
    table.add_row("bot login + first sync", f"{bot.first_sync_seconds:.2f}", "", "")
    for name, values in (
        ("model alone: first token", engine_first),
        ("model alone: whole reply", engine_all),
        ("send -> first message", first),
        ("send -> first edit", first_edit),
        ("send -> final edit", final),
    ):
        clean = [v for v in values if v == v]
        if clean:
            table.add_row(name, f"{statistics.median(clean):.2f}", f"{min(clean):.2f}", f"{max(clean):.2f}")
        else:
            table.add_row(name, "none", "", "")
    console.print(table)
    targets = Targets("matrix_latency targets")
    targets.check("messages answered", len(first), "==", args.messages)
    targets.check("send -> first message p95, s", round(p95(first), 3), "<", TARGET_FIRST_MESSAGE_P95_S)
    share = statistics.median(f - e for f, e in zip(first, engine_first, strict=True) if e == e)
    targets.check(
        "Matrix's share (first message minus model first token) median, s",
        round(share, 3),
        "<",
        TARGET_MATRIX_SHARE_S,
    )
    edits = [v for v in first_edit if v == v]
    if edits:
        targets.check("send -> first edit p95, s", round(p95(edits), 3), "<", TARGET_FIRST_EDIT_P95_S)
    return targets


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument(
        "--tiny", action="store_true", help="the tiny random model instead of the bundled one"
    )
    parser.add_argument("--encrypted", action="store_true", help="an end-to-end encrypted DM")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="reuse a data dir (keeps the model cache)"
    )
    asyncio.run(main(parser.parse_args())).exit()
