"""A local Telegram Bot API server for tests: the documented wire format on 127.0.0.1.

It answers the methods python-telegram-bot calls with the payloads the Bot API documents
(`{"ok": true, "result": ...}` / `{"ok": false, "error_code": ..., "description": ...}`),
parses `parse_mode=HTML` the way Telegram does (only its tags; unbalanced or unknown tags are
refused with "can't parse entities"), enforces the 4096-character limit after parsing, refuses
an edit that changes nothing ("message is not modified"), and records every call.
Tests queue updates for getUpdates, script failures (429 with retry_after, 403, 502), and read
back what the bot sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "123456:TEST-token_for-fake-api"
BOT = {
    "id": 7000001,
    "is_bot": True,
    "first_name": "Confidante",
    "username": "ConfidanteTestBot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}
_JSON_PARAMS = {
    "reply_markup",
    "reply_parameters",
    "entities",
    "caption_entities",
    "allowed_updates",
    "commands",
    "link_preview_options",
    "scope",
}
_INT_PARAMS = {
    "user_id",
    "chat_id",
    "message_id",
    "draft_id",
    "offset",
    "limit",
    "timeout",
    "message_thread_id",
}
_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a", "code", "pre"}
_TAGS |= {"blockquote", "tg-emoji"}
_ENTITY = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


class ApiError(Exception):
    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.code, self.description, self.parameters = code, description, parameters


def parse_html(text: str) -> str:
    """The visible text of a Telegram-HTML message, or ApiError as Telegram gives it."""
    out: list[str] = []
    stack: list[str] = []
    pos = 0
    token = re.compile(
        r"<(/?)([A-Za-z][A-Za-z0-9-]*)((?:\s+[^<>]*)?)>|<|&(#x[0-9a-fA-F]+|#[0-9]+|[A-Za-z]+);|[^<&]+|&"
    )
    while pos < len(text):
        m = token.match(text, pos)
        assert m is not None
        piece = m.group(0)
        offset = len(text[:pos].encode())
        if m.group(2):
            closing, name = m.group(1) == "/", m.group(2).lower()
            if name not in _TAGS:
                kind = "end" if closing else "start"
                raise ApiError(
                    400,
                    f'Bad Request: can\'t parse entities: Unsupported {kind} tag "{name}" at byte offset {offset}',
                )
            if closing:
                if not stack or stack[-1] != name:
                    raise ApiError(
                        400,
                        f'Bad Request: can\'t parse entities: Unmatched end tag at byte offset {offset}, expected "</{stack[-1] if stack else ""}>", found "</{name}>"',
                    )
                stack.pop()
            else:
                stack.append(name)
        elif piece == "<":
            raise ApiError(
                400,
                f"Bad Request: can't parse entities: Unexpected end of name token at byte offset {offset}",
            )
        elif m.group(4):
            ent = m.group(4)
            if ent.startswith("#x"):
                out.append(chr(int(ent[2:], 16)))
            elif ent.startswith("#"):
                out.append(chr(int(ent[1:])))
            elif ent in _ENTITY:
                out.append(_ENTITY[ent])
            else:
                raise ApiError(
                    400,
                    f'Bad Request: can\'t parse entities: Unsupported HTML entity "&{ent};" at byte offset {offset}',
                )
        else:
            out.append(piece)
        pos = m.end()
    if stack:
        raise ApiError(
            400,
            f"Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"{stack[-1]}\"",
        )
    return "".join(out)


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float  # loop time when received
    status: int = 200


@dataclass
class FakeBotAPI:
    token: str = TOKEN
    bot: dict[str, Any] = field(default_factory=lambda: dict(BOT))
    drafts_supported: bool = True
    calls: list[Call] = field(default_factory=list)
    messages: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    chats: dict[int, dict[str, Any]] = field(default_factory=dict)
    blocked: set[int] = field(default_factory=set)
    webhook: dict[str, Any] = field(default_factory=dict)
    commands: list[dict[str, Any]] = field(default_factory=list)
    admins: dict[int, set[int]] = field(default_factory=dict)  # chat id -> user ids that administer it
    files: dict[str, bytes] = field(default_factory=dict)  # file_id -> content, for getFile + download

    def __post_init__(self) -> None:
        self._updates: list[dict[str, Any]] = []
        self._received: dict[tuple[int, int], dict[str, Any]] = {}  # what people sent (for replies)
        self._update_ids = itertools.count(1000)
        self._message_ids: dict[int, itertools.count] = {}
        self._new_update = asyncio.Condition()
        self._failures: dict[str, list[ApiError]] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---- server ------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._dispatch)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            body = await request.read()
            return json.loads(body) if body else {}
        form = await request.post()
        params: dict[str, Any] = {}
        for key, value in form.items():
            if isinstance(value, web.FileField):
                params[key] = {"filename": value.filename, "content": value.file.read()}
            elif key in _JSON_PARAMS:
                params[key] = json.loads(value)
            elif key in _INT_PARAMS:
                try:
                    params[key] = int(value)
                except ValueError:
                    params[key] = value
            elif value in ("true", "false"):
                params[key] = value == "true"
            else:
                params[key] = value
        return params

    async def _dispatch(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        params = await self._params(request)
        call = Call(method, params, asyncio.get_running_loop().time())
        self.calls.append(call)
        handler = getattr(self, f"_m_{method}", None)
        try:
            if handler is None:
                raise ApiError(404, "Not Found")
            scripted = self._failures.get(method)
            if scripted:
                raise scripted.pop(0)
            chat_id = params.get("chat_id")
            if isinstance(chat_id, int) and chat_id in self.blocked:
                raise ApiError(403, "Forbidden: bot was blocked by the user")
            result = await handler(params)
        except ApiError as exc:
            call.status = exc.code
            body: dict[str, Any] = {"ok": False, "error_code": exc.code, "description": exc.description}
            if exc.parameters:
                body["parameters"] = exc.parameters
            return web.json_response(body, status=exc.code)
        return web.json_response({"ok": True, "result": result})

    async def _download(self, request: web.Request) -> web.Response:
        """The Bot API's file endpoint: /file/bot<token>/<file_path> (file_path from getFile)."""
        self.calls.append(Call("download", {"path": request.match_info["path"]}, 0.0))
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        content = self.files.get(request.match_info["path"].removeprefix("media/"))
        if content is None:
            return web.Response(status=404)
        return web.Response(body=content, content_type="application/octet-stream")

    def add_file(self, file_id: str, content: bytes) -> dict[str, Any]:
        """Make a file downloadable; returns the fields a Voice/PhotoSize/Audio object carries."""
        self.files[file_id] = content
        return {"file_id": file_id, "file_unique_id": f"u-{file_id}", "file_size": len(content)}

    # ---- scripting ---------------------------------------------------------------------------

    def fail(self, method: str, code: int, description: str, *, times: int = 1, **parameters: Any) -> None:
        """The next `times` calls of `method` fail like Telegram would (e.g. 429 with retry_after)."""
        self._failures.setdefault(method, []).extend(
            ApiError(code, description, parameters or None) for _ in range(times)
        )

    def remember_chat(self, chat: dict[str, Any]) -> None:
        self.chats[chat["id"]] = chat

    async def push(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates; gives it an update_id unless it has one."""
        update.setdefault("update_id", next(self._update_ids))
        for key in ("message", "edited_message"):
            if key in update and isinstance(update[key].get("chat"), dict):
                self.remember_chat(update[key]["chat"])
                self._received[(update[key]["chat"]["id"], update[key].get("message_id"))] = update[key]
        async with self._new_update:
            self._updates.append(update)
            self._new_update.notify_all()
        return update

    def next_message_id(self, chat_id: int) -> int:
        return next(self._message_ids.setdefault(chat_id, itertools.count(500)))

    # ---- reading back ------------------------------------------------------------------------

    def of(self, method: str, chat_id: int | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.method == method and (chat_id is None or c.params.get("chat_id") == chat_id)
        ]

    def bot_messages(self, chat_id: int) -> list[dict[str, Any]]:
        """What the chat shows now from the bot, in order (edits applied)."""
        return [m for (c, _), m in sorted(self.messages.items()) if c == chat_id]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                methods = [c.method for c in self.calls]
                raise AssertionError(f"timed out waiting; calls so far: {methods}")
            await asyncio.sleep(0.02)

    # ---- methods -----------------------------------------------------------------------------

    def _chat(self, chat_id: int) -> dict[str, Any]:
        if chat_id in self.chats:
            return self.chats[chat_id]
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": "Someone"}
        return {"id": chat_id, "type": "supergroup", "title": "A group"}

    def _text(self, params: dict[str, Any]) -> str:
        raw = params.get("text")
        if raw is None or raw == "":
            raise ApiError(400, "Bad Request: message text is empty")
        text = parse_html(raw) if str(params.get("parse_mode", "")).upper() == "HTML" else raw
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if _utf16(text) > 4096:
            raise ApiError(400, "Bad Request: message is too long")
        return text

    def _store(self, chat_id: int, content: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        message_id = self.next_message_id(chat_id)
        msg: dict[str, Any] = {
            "message_id": message_id,
            "from": {k: self.bot[k] for k in ("id", "is_bot", "first_name", "username")},
            "chat": self._chat(chat_id),
            "date": int(time.time()),
            **content,
        }
        if params.get("message_thread_id"):
            msg["message_thread_id"] = params["message_thread_id"]
            msg["is_topic_message"] = True
        if params.get("reply_markup"):
            msg["reply_markup"] = params["reply_markup"]
        reply = params.get("reply_parameters")
        quoted = reply and (
            self.messages.get((chat_id, reply["message_id"]))
            or self._received.get((chat_id, reply["message_id"]))
        )
        if quoted:
            msg["reply_to_message"] = quoted
        self.messages[(chat_id, message_id)] = msg
        return msg

    async def _m_getMe(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.bot

    async def _m_deleteWebhook(self, params: dict[str, Any]) -> bool:
        self.webhook = {}
        return True

    async def _m_setWebhook(self, params: dict[str, Any]) -> bool:
        if not str(params.get("url", "")).startswith("https://"):
            raise ApiError(400, "Bad Request: bad webhook: HTTPS url must be provided for webhook")
        self.webhook = params
        return True

    async def _m_setMyCommands(self, params: dict[str, Any]) -> bool:
        for cmd in params.get("commands", []):
            if not re.fullmatch(r"[a-z0-9_]{1,32}", cmd["command"]):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        self.commands = params.get("commands", [])
        return True

    async def _m_getUpdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        if not self._updates and timeout > 0:
            async with self._new_update:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._new_update.wait(), timeout)
        limit = int(params.get("limit") or 100)
        return self._updates[:limit]

    async def _m_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        text = self._text(params)
        return self._store(int(params["chat_id"]), {"text": text}, params)

    async def _m_editMessageText(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id, message_id = int(params["chat_id"]), int(params["message_id"])
        msg = self.messages.get((chat_id, message_id))
        if msg is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        text = self._text(params)
        markup = params.get("reply_markup")
        if msg["text"] == text and msg.get("reply_markup") == markup:
            raise ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply markup "
                "are exactly the same as a current content and reply markup of the message",
            )
        msg["text"] = text
        msg["edit_date"] = int(time.time())
        if markup:
            msg["reply_markup"] = markup
        return msg

    async def _m_editMessageReplyMarkup(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id, message_id = int(params["chat_id"]), int(params["message_id"])
        msg = self.messages.get((chat_id, message_id))
        if msg is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        msg.pop("reply_markup", None)
        if params.get("reply_markup"):
            msg["reply_markup"] = params["reply_markup"]
        return msg

    async def _m_sendMessageDraft(self, params: dict[str, Any]) -> bool:
        if not self.drafts_supported:
            raise ApiError(404, "Not Found")
        chat_id = int(params["chat_id"])
        if self._chat(chat_id)["type"] != "private":
            raise ApiError(400, "Bad Request: TEXTDRAFT_PEER_INVALID")
        if not params.get("draft_id"):
            raise ApiError(400, "Bad Request: draft_id must be non-zero")
        if params.get("text"):
            self._text(params)
        return True

    async def _m_sendChatAction(self, params: dict[str, Any]) -> bool:
        if params.get("action") not in {"typing", "upload_document", "upload_photo", "record_voice"}:
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        return True

    async def _m_sendDocument(self, params: dict[str, Any]) -> dict[str, Any]:
        doc = params.get("document")
        if not isinstance(doc, dict):
            raise ApiError(400, "Bad Request: there is no document in the request")
        content = {
            "document": {
                "file_id": f"DOC{len(self.calls)}",
                "file_unique_id": f"U{len(self.calls)}",
                "file_name": doc["filename"],
                "mime_type": "application/json",
                "file_size": len(doc["content"]),
            }
        }
        return self._store(int(params["chat_id"]), content, params)

    async def _m_getFile(self, params: dict[str, Any]) -> dict[str, Any]:
        file_id = params.get("file_id")
        if file_id not in self.files:
            raise ApiError(400, "Bad Request: invalid file_id")
        return {
            "file_id": file_id,
            "file_unique_id": f"u-{file_id}",
            "file_size": len(self.files[file_id]),
            "file_path": f"media/{file_id}",
        }

    async def _m_getChatMember(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id, user_id = int(params["chat_id"]), int(params["user_id"])
        member = {"user": {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"}}
        if user_id not in self.admins.get(chat_id, set()):
            return {**member, "status": "member"}
        rights = [
            "can_manage_chat",
            "can_delete_messages",
            "can_manage_video_chats",
            "can_restrict_members",
            "can_promote_members",
            "can_change_info",
            "can_invite_users",
            "can_post_stories",
            "can_edit_stories",
            "can_delete_stories",
        ]
        return {
            **member,
            "status": "administrator",
            "can_be_edited": False,
            "is_anonymous": False,
            **dict.fromkeys(rights, True),
        }

    async def _m_answerCallbackQuery(self, params: dict[str, Any]) -> bool:
        if not params.get("callback_query_id"):
            raise ApiError(
                400, "Bad Request: query is too old and response timeout expired or query ID is invalid"
            )
        return True


# ---- update builders (the shapes Telegram sends) -------------------------------------------------

_ids = itertools.count(1)


def user(uid: int, first_name: str = "Ada", username: str | None = None) -> dict[str, Any]:
    u: dict[str, Any] = {"id": uid, "is_bot": False, "first_name": first_name}
    if username:
        u["username"] = username
    return u


def private_chat(u: dict[str, Any]) -> dict[str, Any]:
    return {"id": u["id"], "type": "private", "first_name": u["first_name"]}


def group_chat(chat_id: int, title: str = "Team", *, forum: bool = False) -> dict[str, Any]:
    chat: dict[str, Any] = {"id": chat_id, "type": "supergroup", "title": title}
    if forum:
        chat["is_forum"] = True
    return chat


def _utf16_offset(text: str, needle: str) -> tuple[int, int]:
    start = text.index(needle)
    return _utf16(text[:start]), _utf16(needle)


def message(
    chat: dict[str, Any],
    sender: dict[str, Any],
    text: str | None = None,
    *,
    message_id: int | None = None,
    mention: str | None = None,
    text_mention: tuple[str, dict[str, Any]] | None = None,
    command: str | None = None,
    reply_to: dict[str, Any] | None = None,
    thread_id: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Message object; entity offsets are computed in UTF-16 units as Telegram does."""
    msg: dict[str, Any] = {
        "message_id": message_id if message_id is not None else next(_ids),
        "date": int(time.time()),
        "chat": chat,
        "from": sender,
    }
    entities = []
    if text is not None:
        msg["text"] = text
        if mention:
            off, ln = _utf16_offset(text, mention)
            entities.append({"type": "mention", "offset": off, "length": ln})
        if text_mention:
            off, ln = _utf16_offset(text, text_mention[0])
            entities.append({"type": "text_mention", "offset": off, "length": ln, "user": text_mention[1]})
        if command:
            off, ln = _utf16_offset(text, command)
            entities.append({"type": "bot_command", "offset": off, "length": ln})
    if entities:
        msg["entities"] = entities
    if reply_to is not None:
        msg["reply_to_message"] = reply_to
    if thread_id is not None:
        msg["message_thread_id"] = thread_id
        msg["is_topic_message"] = True
    if extra:
        msg.update(extra)
    return msg


def escape(text: str) -> str:
    return html.escape(text, quote=False)
