"""`confidante run` as an operator starts it, with two test-only changes: the tiny random
Llama instead of the bundled model (no conversion, starts in seconds), and every streamed
delta held back CRASH_DELTA_DELAY seconds, so a reply is really mid-stream when the test
kills the process. Everything else (the CLI, settings from the environment, LanceDB, the
inbox, the embedded worker, the channels) is the real thing."""

from __future__ import annotations

import asyncio
import os
import sys


def main() -> None:
    from core.llm import model
    from core.llm.engine import Engine

    delay = float(os.environ.get("CRASH_DELTA_DELAY", "0.05"))
    model.load_model = lambda settings: model.tiny_llama()
    stream = Engine.stream

    async def slowed(self, messages, **kwargs):
        async for delta in stream(self, messages, **kwargs):
            await asyncio.sleep(delay)
            yield delta

    Engine.stream = slowed
    from app.cli import main as cli

    sys.argv = ["confidante", "run"]
    cli()


if __name__ == "__main__":
    main()


# ---- what the crash tests share ------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def spawn(env: dict[str, str], log_path: str):
    """Start the runner in its own process group (so the test can kill the whole group,
    embedded worker included, the way a power cut or the OOM killer would)."""
    import subprocess

    full = {k: v for k, v in os.environ.items() if not k.startswith(("CONFIDANTE_", "SLACK_", "TELEGRAM_"))}
    full.update(env)
    full.setdefault("CRASH_DELTA_DELAY", "0.05")
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.crash_runner"],
            cwd=ROOT,
            env=full,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_group(proc) -> None:
    import signal

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
