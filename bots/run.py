"""`confidante run`: every configured platform in one process, or the terminal when none is."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from core.assistant import Assistant
from core.config import Settings

log = structlog.get_logger(__name__)


def _configured(settings: Settings) -> dict[str, Callable[[Assistant, Settings], Awaitable[None]]]:
    runners: dict[str, Callable[[Assistant, Settings], Awaitable[None]]] = {}
    if settings.telegram_enabled:
        from bots.telegram import run_telegram

        runners["telegram"] = run_telegram
    if settings.slack_enabled:
        from bots.slack import run_slack

        runners["slack"] = run_slack
    if settings.matrix_enabled:
        from bots.matrix import run_matrix

        runners["matrix"] = run_matrix
    return runners


async def run_platforms(assistant: Assistant, settings: Settings, *, person: str) -> None:
    from bots.ops_http import serve_ops

    async with serve_ops(assistant, settings):
        await _run(assistant, settings, person=person)


async def _run(assistant: Assistant, settings: Settings, *, person: str) -> None:
    runners = _configured(settings)
    if not runners:
        from bots.console import chat

        await chat(assistant, person)
        return
    log.info("starting platforms", platforms=sorted(runners))
    async with asyncio.TaskGroup() as group:
        for name, runner in runners.items():
            group.create_task(runner(assistant, settings), name=name)
