"""The operator's endpoints inside `confidante run`: /healthz, /readyz and Prometheus /metrics.

/healthz says the process and its event loop answer (a container restarts it when they do not);
/readyz says it can do its job now: the model is loaded (or the generation server answers), the
store takes writes, and the broker answers when one is configured. It listens on 127.0.0.1 by
default: the metrics name no person, but they are still nobody else's business.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from app import health
from core import metrics
from core.config import Settings

log = structlog.get_logger(__name__)


def readiness(assistant: Any, settings: Settings) -> dict[str, str | None]:
    """Each part's problem, or None when it works (blocking: call it in a thread)."""
    checks = {
        "model": health.engine(getattr(assistant, "engine", None)),
        "store": health.store(settings.store_path, getattr(assistant, "store", None)),
    }
    if settings.broker_url:
        checks["broker"] = health.broker(settings)
    return checks


def watch(assistant: Any, settings: Settings) -> None:
    """Point the scrape-time metrics at this process's engine, journal and broker queue."""
    metrics.watch_engine(getattr(assistant, "engine", None))
    store = getattr(assistant, "store", None)
    if store is not None and hasattr(store, "backlog"):
        metrics.watch_backlog(store.backlog)
    from workers.broker import queue_depth

    metrics.watch_queue(lambda: queue_depth(settings))


def make_app(assistant: Any, settings: Settings) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        checks = await asyncio.to_thread(readiness, assistant, settings)
        ready = not any(checks.values())
        body = {
            "status": "ready" if ready else "unready",
            "checks": {name: problem or "ok" for name, problem in checks.items()},
        }
        return web.json_response(body, status=200 if ready else 503)

    async def metrics_page(request: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, REGISTRY)  # a queue-depth read may block
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app


@contextlib.asynccontextmanager
async def serve_ops(assistant: Any, settings: Settings) -> AsyncIterator[int | None]:
    """Serve the endpoints while the block runs; yields the bound port (None: turned off)."""
    if settings.ops_port <= 0:
        yield None
        return
    watch(assistant, settings)
    runner = web.AppRunner(make_app(assistant, settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.ops_host, settings.ops_port)
    try:
        await site.start()
    except OSError as exc:  # people are answered anyway; a container's health check will say it
        await runner.cleanup()
        log.error(
            "cannot serve /healthz, /readyz and /metrics: set CONFIDANTE_OPS_PORT to a free port, "
            "or 0 to turn them off",
            host=settings.ops_host,
            port=settings.ops_port,
            error=exc.strerror,
        )
        yield None
        return
    log.info("ops endpoints up", host=settings.ops_host, port=settings.ops_port)
    try:
        yield settings.ops_port
    finally:
        await runner.cleanup()
