"""The webhook endpoint, served by the app itself.

PTB's own webhook server answers a wrong secret with 403; we serve the endpoint with aiohttp so
a missing or wrong `X-Telegram-Bot-Api-Secret-Token` gets 401 and a malformed body gets 400,
each with a message saying what was wrong, and nothing reaches the application.
"""

from __future__ import annotations

import hmac
import json

import structlog
from aiohttp import web
from telegram import Update
from telegram.ext import Application

log = structlog.get_logger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def _error(status: int, description: str) -> web.Response:
    return web.json_response({"ok": False, "description": description}, status=status)


class WebhookServer:
    """Receives Telegram's POSTs and queues the updates for the PTB application."""

    def __init__(self, application: Application, *, secret: str, path: str, host: str, port: int) -> None:
        self.application = application
        self._secret = secret.encode()
        self.path = path if path.startswith("/") else f"/{path}"
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None

    async def _receive(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER)
        if given is None:
            log.warning("telegram.webhook_rejected", reason="missing secret token", remote=request.remote)
            return _error(401, f"missing {SECRET_HEADER} header")
        if not hmac.compare_digest(given.encode(), self._secret):
            log.warning("telegram.webhook_rejected", reason="wrong secret token", remote=request.remote)
            return _error(401, f"wrong {SECRET_HEADER} header")
        try:
            data = json.loads(await request.read())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _error(400, f"body is not JSON: {exc}")
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            return _error(400, "body is not a Telegram Update (no integer update_id)")
        try:
            update = Update.de_json(data, self.application.bot)
        except Exception as exc:  # PTB raises plain TypeError/KeyError on shapes it cannot read
            return _error(400, f"update {data['update_id']} could not be read: {type(exc).__name__}: {exc}")
        await self.application.update_queue.put(update)
        return web.json_response({"ok": True})

    async def start(self) -> None:
        app = web.Application(client_max_size=2 * 1024 * 1024)
        app.router.add_post(self.path, self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        log.info("telegram.webhook_listening", host=self.host, port=self.port, path=self.path)

    @property
    def bound_port(self) -> int:
        """The port actually bound (tests ask for port 0)."""
        assert self._runner is not None
        for site in self._runner.sites:
            server = getattr(site, "_server", None)
            if server is not None and server.sockets:
                return int(server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
