"""`confidante run`: every configured platform in one process, or the terminal when none is."""

from __future__ import annotations

import asyncio
import signal

import structlog

from bots.channel import build_channels
from bots.settings import ChannelSettings
from core.assistant import Assistant

log = structlog.get_logger(__name__)


async def run_platforms(assistant: Assistant, settings: ChannelSettings, *, person: str) -> None:
    from app.ops_http import serve_ops
    from bots.web.serve import serve_web
    from workers import training  # the page's adapter versions and rollback

    async with serve_ops(assistant, settings), serve_web(assistant, settings, training):
        await _run(assistant, settings, person=person)


async def _run(assistant: Assistant, settings: ChannelSettings, *, person: str) -> None:
    runners = build_channels(settings)
    if not runners:
        from bots.console import chat

        await chat(assistant, person)
        return
    log.info("starting platforms", platforms=sorted(runners))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(runner(assistant, settings), name=name) for name, runner in runners.items()
            ]
            group.create_task(_stop_on(stop, tasks, settings.shutdown_grace_seconds))
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _stop_on(stop: asyncio.Event, tasks: list[asyncio.Task[None]], grace: float) -> None:
    """On SIGINT/SIGTERM, cancel every channel: each stops taking messages, gives the replies
    in progress `grace` seconds, and cuts the rest (the inbox answers them at the next start)."""
    waiter = asyncio.ensure_future(stop.wait())
    try:
        pending = {t for t in tasks if not t.done()}
        while pending and not stop.is_set():
            _, pending = await asyncio.wait(pending | {waiter}, return_when=asyncio.FIRST_COMPLETED)
            pending.discard(waiter)
    finally:
        waiter.cancel()
    if stop.is_set():
        log.info("stopping: finishing the replies in progress", grace_s=grace)
        for task in tasks:
            task.cancel()
