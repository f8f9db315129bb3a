"""A local stand-in for Slack's servers, on 127.0.0.1, speaking Slack's documented wire formats.

- Web API: `POST /api/<method>` (form or JSON body, token in `Authorization: Bearer`), answering
  `{"ok": true, ...}` shapes as the method reference documents them, or `{"ok": false, "error"}`.
  Every call is recorded. Failures can be queued per method (HTTP 429 with `Retry-After`,
  Slack errors such as `invalid_auth`).
- File uploads: the `upload_url` that `files.getUploadURLExternal` hands out.
- `response_url`s of slash commands.
- Socket Mode: `apps.connections.open` returns a `ws://` URL here; the socket sends `hello`,
  then `events_api` / `slash_commands` envelopes on demand, and records acks by envelope_id.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web


@dataclass
class Team:
    team_id: str
    bot_user_id: str
    bot_id: str
    name: str = "Test Workspace"


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str | None
    at: float
    status: int = 200
    error: str | None = None


@dataclass
class Message:
    channel: str
    ts: str
    thread_ts: str | None
    text: str = ""
    blocks: list[Any] = field(default_factory=list)
    streaming: bool = False
    updates: int = 0
    metadata: dict[str, Any] | None = None


class FakeSlack:
    def __init__(self) -> None:
        self.teams: dict[str, Team] = {}
        self.user_tz: dict[str, str] = {}  # users.info "tz" per user id
        self.app_tokens: set[str] = set()
        self.calls: list[Call] = []
        self.messages: dict[str, Message] = {}
        self.uploads: dict[str, bytes] = {}
        self.private_files: dict[str, tuple[str, bytes]] = {}  # file id -> (owning bot token, content)
        self.acks: dict[str, float] = {}
        self.oauth_codes: dict[str, dict[str, Any]] = {}
        self.stream_enabled = True
        self.admins: set[str] = set()  # users.info says is_admin for these user ids
        self.creators: dict[str, str] = {}  # conversations.info: channel id -> creator's user id
        self._failures: dict[str, list[tuple[int, dict[str, str], dict[str, Any]]]] = {}
        self._ts = itertools.count(1)
        self._sockets: list[web.WebSocketResponse] = []
        self._socket_ready = asyncio.Event()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ----------------------------------------------------------------- setup
    def add_team(self, token: str, team_id: str, bot_user_id: str = "UBOT", bot_id: str = "BBOT") -> Team:
        team = Team(team_id, bot_user_id, bot_id)
        self.teams[token] = team
        return team

    def fail_next(
        self,
        method: str,
        *,
        status: int = 200,
        error: str | None = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        body = {"ok": False, "error": error or "ratelimited"}
        for _ in range(times):
            self._failures.setdefault(method, []).append((status, headers or {}, body))

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files-pri/{team}-{file_id}/download/{name}", self._download)
        app.router.add_post("/response/{rid}", self._response_url)
        app.router.add_get("/link/", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        for ws in self._sockets:
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def response_url(self) -> str:
        return f"{self.url}/response/{uuid.uuid4().hex}"

    # ----------------------------------------------------------------- queries
    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def posted_in(self, channel: str) -> list[Message]:
        return [m for m in self.messages.values() if m.channel == channel]

    async def wait_for(self, predicate: Any, timeout: float = 30.0) -> Any:
        """Wait until `predicate()` returns something truthy (re-checked on every call)."""

        async def until() -> Any:
            async with self._changed:
                while not (result := predicate()):
                    await self._changed.wait()
                return result

        return await asyncio.wait_for(until(), timeout)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ----------------------------------------------------------------- Web API
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        raw = await request.read()
        ctype = request.headers.get("Content-Type", "")
        if raw:
            if ctype.startswith("application/json"):
                args.update(json.loads(raw))
            else:
                args.update(parse_qsl(raw.decode(), keep_blank_values=True))
        auth = request.headers.get("Authorization", "")
        token = None
        if auth.startswith("Basic "):  # oauth.v2.access: client credentials by HTTP Basic auth
            client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
            args.setdefault("client_id", client_id)
            args.setdefault("client_secret", client_secret)
        elif auth.startswith("Bearer "):
            token = auth.removeprefix("Bearer ").strip()
        token = token or args.pop("token", None)
        call = Call(method, args, token, time.monotonic())
        self.calls.append(call)
        try:
            queued = self._failures.get(method)
            if queued:
                status, headers, body = queued.pop(0)
                call.status, call.error = status, body["error"]
                return web.json_response(body, status=status, headers=headers)
            body = self._answer(method, args, token)
            if not body.get("ok"):
                call.error = body.get("error")
            return web.json_response(body)
        finally:
            await self._notify()

    def _team(self, token: str | None) -> Team | None:
        return self.teams.get(token or "")

    def _next_ts(self) -> str:
        n = next(self._ts)
        return f"{1_700_000_000 + n}.{n:06d}"

    def _answer(self, method: str, a: dict[str, Any], token: str | None) -> dict[str, Any]:
        if method == "oauth.v2.access":
            return self._oauth_access(a)
        if method == "apps.connections.open":
            if token not in self.app_tokens:
                return {"ok": False, "error": "invalid_auth"}
            return {"ok": True, "url": f"ws://{self.url.removeprefix('http://')}/link/?ticket={uuid.uuid4()}"}
        team = self._team(token)
        if team is None:
            return {"ok": False, "error": "invalid_auth" if token else "not_authed"}
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://test.slack.com/",
                "team": team.name,
                "user": "confidante",
                "team_id": team.team_id,
                "user_id": team.bot_user_id,
                "bot_id": team.bot_id,
                "is_enterprise_install": False,
            }
        if method == "users.info":
            user = str(a.get("user") or "")
            if not user:
                return {"ok": False, "error": "user_not_found"}
            admin = user in self.admins
            return {
                "ok": True,
                "user": {
                    "id": user,
                    "team_id": team.team_id,
                    "is_admin": admin,
                    "is_owner": False,
                    "tz": self.user_tz.get(user, ""),  # as Slack's profile has it, for users a test gave one
                },
            }
        if method == "conversations.info":
            channel = str(a.get("channel") or "")
            if not channel:
                return {"ok": False, "error": "channel_not_found"}
            return {"ok": True, "channel": {"id": channel, "creator": self.creators.get(channel, "")}}
        if method == "chat.postMessage":
            if not a.get("channel"):
                return {"ok": False, "error": "channel_not_found"}
            if len(str(a.get("text") or "")) > 40_000:
                return {"ok": False, "error": "msg_too_long"}
            ts = self._next_ts()
            blocks = _json_field(a.get("blocks"))
            for b in blocks:
                if b.get("type") == "section" and len(b["text"]["text"]) > 3000:
                    return {"ok": False, "error": "invalid_blocks"}
            msg = Message(a["channel"], ts, a.get("thread_ts"), str(a.get("text") or ""), blocks)
            meta = _json_field(a.get("metadata")) if a.get("metadata") else None
            msg.metadata = meta if isinstance(meta, dict) else None
            self.messages[ts] = msg
            return {"ok": True, "channel": a["channel"], "ts": ts, "message": self._message_json(msg, team)}
        if method == "chat.update":
            msg = self.messages.get(str(a.get("ts")))
            if msg is None or msg.channel != a.get("channel"):
                return {"ok": False, "error": "message_not_found"}
            blocks = _json_field(a.get("blocks"))
            for b in blocks:
                if b.get("type") == "section" and len(b["text"]["text"]) > 3000:
                    return {"ok": False, "error": "invalid_blocks"}
            msg.text, msg.blocks, msg.updates = str(a.get("text") or ""), blocks, msg.updates + 1
            return {"ok": True, "channel": msg.channel, "ts": msg.ts, "text": msg.text}
        if method == "chat.startStream":
            if not self.stream_enabled:
                return {"ok": False, "error": "not_allowed_token_type"}
            if not a.get("thread_ts"):
                return {"ok": False, "error": "invalid_arguments"}
            if not a.get("channel", "").startswith("D") and not (
                a.get("recipient_user_id") and a.get("recipient_team_id")
            ):
                return {"ok": False, "error": "invalid_arguments"}
            ts = self._next_ts()
            msg = Message(a["channel"], ts, a["thread_ts"], streaming=True)
            msg.text = _chunks_text(a)
            self.messages[ts] = msg
            return {"ok": True, "channel": a["channel"], "ts": ts}
        if method in ("chat.appendStream", "chat.stopStream"):
            msg = self.messages.get(str(a.get("ts")))
            if msg is None or not msg.streaming:
                return {"ok": False, "error": "message_not_in_streaming_state"}
            added = _chunks_text(a)
            if len(added) > 12_000:
                return {"ok": False, "error": "msg_too_long"}
            msg.text += added
            msg.updates += 1
            if method == "chat.stopStream":
                msg.streaming = False
                msg.blocks = _json_field(a.get("blocks"))
                return {
                    "ok": True,
                    "channel": msg.channel,
                    "ts": msg.ts,
                    "message": self._message_json(msg, team),
                }
            return {"ok": True, "channel": msg.channel, "ts": msg.ts}
        if method == "assistant.threads.setStatus":
            if not a.get("channel_id") or not a.get("thread_ts"):
                return {"ok": False, "error": "invalid_arguments"}
            return {"ok": True}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": self._next_ts()}
        if method == "conversations.history":  # newest first; metadata only when asked for
            shown = [m for m in self.messages.values() if m.channel == a.get("channel") and not m.thread_ts]
            shown = sorted(shown, key=lambda m: float(m.ts), reverse=True)[: int(a.get("limit") or 100)]
            with_meta = str(a.get("include_all_metadata", "")).lower() in ("1", "true")
            out = []
            for m in shown:
                row = {"type": "message", "ts": m.ts, "text": m.text, "bot_id": team.bot_id}
                if with_meta and m.metadata:
                    row["metadata"] = m.metadata
                out.append(row)
            return {"ok": True, "messages": out, "has_more": False}
        if method == "conversations.open":
            return {"ok": True, "channel": {"id": "D" + str(a.get("users", "X")).removeprefix("U")}}
        if method == "files.getUploadURLExternal":
            if not a.get("filename") or not str(a.get("length", "")).isdigit():
                return {"ok": False, "error": "invalid_arguments"}
            file_id = f"F{next(self._ts):08d}"
            return {"ok": True, "upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}
        if method == "files.completeUploadExternal":
            files = _json_field(a.get("files"))
            missing = [f["id"] for f in files if f["id"] not in self.uploads]
            if missing:
                return {"ok": False, "error": "file_not_found"}
            return {
                "ok": True,
                "files": [
                    {"id": f["id"], "title": f.get("title", ""), "name": f.get("title", "")} for f in files
                ],
            }
        if method == "views.publish":
            view = _json_field(a.get("view"))
            if not a.get("user_id") or not isinstance(view, dict) or view.get("type") != "home":
                return {"ok": False, "error": "invalid_arguments"}
            if len(view.get("blocks", [])) > 100:
                return {"ok": False, "error": "invalid_arguments"}
            return {"ok": True, "view": {"id": "V1", "type": "home", "blocks": view.get("blocks", [])}}
        if method == "chat.delete":
            self.messages.pop(str(a.get("ts")), None)
            return {"ok": True, "channel": a.get("channel"), "ts": a.get("ts")}
        return {"ok": False, "error": "unknown_method"}

    def _message_json(self, msg: Message, team: Team) -> dict[str, Any]:
        return {
            "type": "message",
            "text": msg.text,
            "user": team.bot_user_id,
            "bot_id": team.bot_id,
            "ts": msg.ts,
            "team": team.team_id,
            "blocks": msg.blocks,
        }

    def _oauth_access(self, a: dict[str, Any]) -> dict[str, Any]:
        grant = self.oauth_codes.get(str(a.get("code")))
        if grant is None:
            return {"ok": False, "error": "invalid_code"}
        if a.get("client_id") != grant["client_id"] or a.get("client_secret") != grant["client_secret"]:
            return {"ok": False, "error": "invalid_client_id"}
        self.add_team(grant["token"], grant["team_id"], grant["bot_user_id"], grant["bot_id"])
        return {
            "ok": True,
            "access_token": grant["token"],
            "token_type": "bot",
            "scope": "app_mentions:read,chat:write,im:history",
            "bot_user_id": grant["bot_user_id"],
            "app_id": "A0TEST",
            "team": {"name": grant["team_name"], "id": grant["team_id"]},
            "enterprise": None,
            "authed_user": {"id": grant["user_id"]},
            "is_enterprise_install": False,
        }

    def grant_oauth_code(self, code: str, **grant: Any) -> None:
        self.oauth_codes[code] = grant

    # ----------------------------------------------------------------- uploads and response_url
    def share_file(
        self, token: str, file_id: str, name: str, mimetype: str, content: bytes, **extra: Any
    ) -> dict[str, Any]:
        """A file a person shared, as the `files` entry of a message event (url_private_download
        answers only with the workspace's bot token, as Slack's file host does)."""
        team = self.teams[token].team_id
        self.private_files[file_id] = (token, content)
        url = f"{self.url}/files-pri/{team}-{file_id}/download/{name}"
        return {
            "id": file_id,
            "name": name,
            "mimetype": mimetype,
            "filetype": name.rsplit(".", 1)[-1],
            "size": len(content),
            "url_private": url,
            "url_private_download": url,
            **extra,
        }

    async def _download(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        self.calls.append(
            Call("files.download", {"file": request.match_info["file_id"]}, token, time.monotonic())
        )
        owner, content = self.private_files.get(request.match_info["file_id"], ("", b""))
        if not owner or token != owner:
            # Slack answers a missing or wrong token with its HTML sign-in page, not a 401
            return web.Response(text="<html>sign in</html>", content_type="text/html")
        return web.Response(body=content, content_type="application/octet-stream")

    async def _upload(self, request: web.Request) -> web.Response:
        data = await request.read()
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            data = b""
            async for part in reader:
                data += await part.read()
        self.uploads[request.match_info["file_id"]] = data
        self.calls.append(Call("upload", {"file_id": request.match_info["file_id"]}, None, time.monotonic()))
        await self._notify()
        return web.Response(text=f"OK - {len(data)}")

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(Call("response_url", body, None, time.monotonic()))
        await self._notify()
        return web.Response(text="ok")

    # ----------------------------------------------------------------- Socket Mode
    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self._sockets),
                "debug_info": {
                    "host": "applink-local",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": "A0TEST"},
            }
        )
        self._socket_ready.set()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                data = json.loads(msg.data)
                if "envelope_id" in data:
                    self.acks[data["envelope_id"]] = time.monotonic()
                    self.calls.append(Call("socket_ack", data, None, time.monotonic()))
                    await self._notify()
        self._sockets.remove(ws)
        return ws

    async def wait_socket(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._socket_ready.wait(), timeout)

    async def send_envelope(
        self, payload: dict[str, Any], *, kind: str = "events_api", retry_attempt: int = 0
    ) -> str:
        """Send one envelope as Slack does; returns its envelope_id (acks land in `acks`)."""
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
            "retry_attempt": retry_attempt,
            "retry_reason": "timeout" if retry_attempt else "",
        }
        await self._sockets[-1].send_json(envelope)
        return envelope_id


def _json_field(value: Any) -> Any:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return json.loads(value)
    return value


def _chunks_text(a: dict[str, Any]) -> str:
    text = str(a.get("markdown_text") or "")
    for chunk in _json_field(a.get("chunks")):
        if chunk.get("type") == "markdown_text":
            text += chunk.get("text", "")
    return text
