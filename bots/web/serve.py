"""`serve_web`: the personal web page inside `confidante run`, on its own address."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from core.config import Settings

if TYPE_CHECKING:
    from bots.web.app import AdapterVersions
    from core.assistant import Assistant

log = structlog.get_logger(__name__)


@contextlib.asynccontextmanager
async def serve_web(
    assistant: Assistant, settings: Settings, adapter_versions: AdapterVersions
) -> AsyncIterator[int | None]:
    """Serve the page while the block runs; yields the bound port (None: off or not bindable).

    The access log stays off: a sign-in link's path holds its token.
    """
    if settings.web_port <= 0:
        yield None
        return
    from bots.web.app import make_app

    runner = web.AppRunner(make_app(assistant, settings, adapter_versions), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.web_host, settings.web_port)
    try:
        await site.start()
    except OSError as exc:  # the chats work without it; /web says where it should be
        await runner.cleanup()
        log.error(
            "cannot serve the web page: set CONFIDANTE_WEB_PORT to a free port, or 0 to turn it off",
            host=settings.web_host,
            port=settings.web_port,
            error=exc.strerror,
        )
        yield None
        return
    log.info("web page up", host=settings.web_host, port=settings.web_port, url=settings.web_base_url)
    try:
        yield settings.web_port
    finally:
        await runner.cleanup()
