"""Putting a core `Reply` into Slack: streamed, split below Slack's limits, with buttons and files.

Two ways to show text while the model writes it:
- Slack's chat streaming API (`chat.startStream` / `appendStream` / `stopStream`, via the SDK's
  `chat_stream` helper) when replying in a thread; Slack renders `markdown_text` itself.
- Otherwise (top-level DM replies, or a workspace where streaming is refused) one message is
  posted and edited with `chat.update` at most once per `update_interval`, rendered as mrkdwn.
Either way each message stays below the section-block limit and a long reply continues in the
next message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.channel import Throttle, stream_edits
from bots.slack_render import (
    SECTION_TEXT_LIMIT,
    STREAM_CHUNK_LIMIT,
    escape,
    fit,
    markdown_to_mrkdwn,
    render_pieces,
    take_escaped,
)
from core.messages import Button, Reply

log = structlog.get_logger(__name__)

BUTTON_ACTION_PREFIX = "confidante_cmd_"
THINKING = "_…thinking_"
# One streamed message holds at most this much text before the reply continues in a new one.
STREAM_MESSAGE_LIMIT = 30_000
# Errors that mean the streaming API is not available here: fall back to chat.update for good.
_STREAM_UNAVAILABLE = {
    "unknown_method",
    "not_allowed_token_type",
    "method_deprecated",
    "feature_not_enabled",
    "not_authorized",
    "invalid_arguments",
    "missing_scope",
    "team_not_allowed",
    "access_denied",
}


@dataclass(frozen=True)
class Target:
    """Where a reply goes: a channel, optionally a thread, for one person of one workspace."""

    channel: str
    thread_ts: str | None
    team_id: str
    user_id: str


def _ignore(ts: str) -> None:
    return None


def button_blocks(buttons: list[Button]) -> list[dict[str, Any]]:
    """An actions block; Slack allows 25 elements per actions block and 75-char labels."""
    blocks: list[dict[str, Any]] = []
    for start in range(0, len(buttons), 25):
        elements = [
            {
                "type": "button",
                "action_id": f"{BUTTON_ACTION_PREFIX}{start + i}",
                "text": {"type": "plain_text", "text": b.label[:75] or "…", "emoji": True},
                "value": b.command[:2000],
            }
            for i, b in enumerate(buttons[start : start + 25])
        ]
        blocks.append({"type": "actions", "elements": elements})
    return blocks


def text_blocks(mrkdwn: str) -> list[dict[str, Any]]:
    return [{"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn or " "}}]


class ReplySender:
    """Renders replies; remembers per workspace whether streaming works there."""

    def __init__(self, *, stream_mode: str = "auto", update_interval: float = 1.0) -> None:
        self.stream_mode = stream_mode
        self.update_interval = update_interval
        self._no_stream_teams: set[str] = set()

    def can_stream(self, target: Target) -> bool:
        if self.stream_mode == "update" or target.thread_ts is None:
            return False
        return target.team_id not in self._no_stream_teams

    async def send(self, client: AsyncWebClient, reply: Reply, target: Target) -> list[str]:
        """Post the whole reply; returns the ts of every message posted (for thread tracking).

        Each new message's ts goes to `reply.sent` as soon as Slack returns it; a reply an
        earlier run had started (`reply.earlier`) continues in that message."""
        posted: list[str] = []
        earlier = reply.earlier[0] if reply.earlier else None
        if reply.stream is not None:
            posted += await self._send_stream(
                client, reply.stream, target, reply.buttons, earlier, reply.sent
            )
        elif reply.text.strip() or reply.buttons:
            posted += await self._post_text(client, reply.text, target, reply.buttons, earlier, reply.sent)
        if reply.document is not None:
            await client.files_upload_v2(
                channel=target.channel,
                thread_ts=target.thread_ts,
                content=reply.document.content,
                filename=reply.document.filename,
                title=reply.document.filename,
            )
        return posted

    async def _post_text(
        self,
        client: AsyncWebClient,
        text: str,
        target: Target,
        buttons: list[Button],
        earlier: str | None = None,
        on_sent: Callable[[str], None] = _ignore,
    ) -> list[str]:
        pieces = render_pieces(text) or [""]
        posted: list[str] = []
        for i, piece in enumerate(pieces):
            blocks = text_blocks(piece) if piece else []
            if i == len(pieces) - 1 and buttons:
                blocks += button_blocks(buttons)
            body = piece or "Choose an action"
            if i == 0 and earlier is not None:
                await client.chat_update(channel=target.channel, ts=earlier, text=body, blocks=blocks)
                posted.append(earlier)
                continue
            resp = await client.chat_postMessage(
                channel=target.channel, thread_ts=target.thread_ts, text=body, blocks=blocks
            )
            posted.append(str(resp["ts"]))
            on_sent(posted[-1])
        return posted

    async def _send_stream(
        self,
        client: AsyncWebClient,
        deltas: AsyncIterator[str],
        target: Target,
        buttons: list[Button],
        earlier: str | None = None,
        on_sent: Callable[[str], None] = _ignore,
    ) -> list[str]:
        """Show a streamed reply: Slack's streaming API in a thread where it works, else one
        message edited as the text grows (also when Slack refuses to start a stream midway).
        Both are driven by bots.channel.stream_edits at most once per `update_interval`."""
        if earlier is not None or not self.can_stream(target):
            show, posted = await self._update_view(client, target, buttons, earlier, on_sent)
            text = await stream_edits(deltas, show, Throttle(self.update_interval), target.channel)
            if not text.strip():
                await show(text, True)  # nothing came: the placeholder gives way to what there is
            return posted
        native = _NativeStream(self, client, target, buttons, on_sent)
        text = await stream_edits(deltas, native.show, Throttle(self.update_interval), target.channel)
        if not text.strip():
            await native.show(text, True)
        return native.posted

    def _refuse(self, target: Target, err: SlackApiError) -> None:
        self._no_stream_teams.add(target.team_id)
        log.info(
            "slack.streaming_unavailable",
            team=target.team_id,
            error=err.response.get("error"),
            hint="falling back to chat.update; enable 'Agents & AI Apps' for the app to stream",
        )

    async def _update_view(
        self,
        client: AsyncWebClient,
        target: Target,
        buttons: list[Button],
        earlier: str | None = None,
        on_sent: Callable[[str], None] = _ignore,
    ) -> tuple[Callable[[str, bool], Awaitable[None]], list[str]]:
        """A message (or an earlier run's) to edit: returns `show(text, final)` for the whole
        text so far, which continues in a new message when one is full, and the posted ts list."""
        if earlier is None:
            resp = await client.chat_postMessage(
                channel=target.channel,
                thread_ts=target.thread_ts,
                text=THINKING,
                blocks=text_blocks(THINKING),
            )
            earlier = str(resp["ts"])
            on_sent(earlier)
        posted = [earlier]
        done = ""  # text already finalized in earlier messages
        shown = ""

        async def update(body: str, final: bool, with_buttons: bool = True) -> None:
            nonlocal shown
            rendered = markdown_to_mrkdwn(body.strip()) if body.strip() else (" " if final else THINKING)
            if rendered == shown and not final:
                return
            blocks = text_blocks(rendered if final else rendered + " …")
            if final and with_buttons and buttons:
                blocks += button_blocks(buttons)
            await client.chat_update(channel=target.channel, ts=posted[-1], text=rendered, blocks=blocks)
            shown = rendered

        async def show(text: str, final: bool) -> None:
            nonlocal done, shown
            rest = text[len(done) :]
            # Rendering never makes text longer than escaping it (plus a newline per code fence),
            # so the escaped length is a cheap bound: render only when a message is nearly full.
            while (
                len(escape(rest)) > SECTION_TEXT_LIMIT - 200
                and len(markdown_to_mrkdwn(rest)) > SECTION_TEXT_LIMIT - 10
            ):
                head = rest[: fit(rest, SECTION_TEXT_LIMIT - 10)]
                await update(head, final=True, with_buttons=False)
                done += head
                rest = text[len(done) :]
                nxt = await client.chat_postMessage(
                    channel=target.channel, thread_ts=target.thread_ts, text="…", blocks=text_blocks("…")
                )
                posted.append(str(nxt["ts"]))
                on_sent(posted[-1])
                shown = ""
            await update(rest, final)

        return show, posted


def _raw_length(escaped: str) -> int:
    """How many characters of the model's text an escaped piece holds (every & opens an entity)."""
    return len(escaped) - 4 * escaped.count("&amp;") - 3 * (escaped.count("&lt;") + escaped.count("&gt;"))


class _NativeStream:
    """Slack's chat streaming API (`chat.startStream` / `appendStream` / `stopStream`) as a
    `show(text, final)` for bots.channel.stream_edits: appends what is new since the last call.
    When Slack refuses to start a stream the rest of the reply goes to an edited message."""

    def __init__(
        self,
        sender: ReplySender,
        client: AsyncWebClient,
        target: Target,
        buttons: list[Button],
        on_sent: Callable[[str], None],
    ) -> None:
        assert target.thread_ts is not None
        self.sender, self.client, self.target, self.buttons, self.on_sent = (
            sender,
            client,
            target,
            buttons,
            on_sent,
        )
        self.posted: list[str] = []
        self.streamer: Any = None
        self.sent = 0  # characters of the text appended so far
        self.opened_at = 0  # where the current stream's message starts in the text
        self.in_message = 0  # escaped characters in the current stream's message
        self.fallback: Callable[[str, bool], Awaitable[None]] | None = None
        self.fallback_from = 0  # where the fallback message's text starts in the reply

    async def _open(self) -> Any:
        self.opened_at = self.sent
        return await self.client.chat_stream(
            channel=self.target.channel,
            thread_ts=self.target.thread_ts,
            recipient_team_id=self.target.team_id,
            recipient_user_id=self.target.user_id,
            buffer_size=1,
        )

    def _note(self) -> None:
        ts = self.streamer.ts if self.streamer is not None else None
        if ts and (not self.posted or self.posted[-1] != ts):
            self.posted.append(str(ts))
            self.on_sent(self.posted[-1])

    async def _refused(self, err: SlackApiError, text: str, final: bool) -> None:
        self.sender._refuse(self.target, err)
        start = self.opened_at
        self.fallback, posted = await self.sender._update_view(
            self.client, self.target, self.buttons, on_sent=self.on_sent
        )
        self.posted += posted
        await self._fallback(text, final, start)

    async def _fallback(self, text: str, final: bool, start: int | None = None) -> None:
        if start is not None:
            self.fallback_from = start
        assert self.fallback is not None
        await self.fallback(text[self.fallback_from :], final)

    async def _append(self, pending: str, text: str, final: bool) -> bool:
        """Append escaped text in pieces Slack accepts, starting a new message when one is
        full; False when Slack refused to start a stream (the rest went to the fallback)."""
        while pending:
            if self.streamer is None:
                self.streamer = await self._open()
            cut = take_escaped(pending, STREAM_CHUNK_LIMIT)
            try:
                await self.streamer.append(markdown_text=pending[:cut])
            except SlackApiError as err:
                if self.streamer.ts is None and err.response.get("error") in _STREAM_UNAVAILABLE:
                    await self._refused(err, text, final)
                    return False
                raise
            self.sent += _raw_length(pending[:cut])
            self.in_message += cut
            pending = pending[cut:]
            self._note()
            if self.in_message >= STREAM_MESSAGE_LIMIT:
                await self.streamer.stop()
                self.streamer, self.in_message = None, 0
        return True

    async def show(self, text: str, final: bool) -> None:
        if self.fallback is not None:
            await self._fallback(text, final)
            return
        pending = escape(text[self.sent :])
        if not final:
            if pending.strip():
                await self._append(pending, text, final)
            return
        if len(pending) > STREAM_CHUNK_LIMIT:  # the closing call carries one piece at most
            cut = take_escaped(pending, len(pending) - STREAM_CHUNK_LIMIT // 2)
            if not await self._append(pending[:cut], text, final):
                return
            pending = escape(text[self.sent :])
        if self.streamer is None and not pending.strip() and not self.buttons:
            return
        if self.streamer is None:
            self.streamer = await self._open()
        try:
            await self.streamer.stop(
                markdown_text=pending or None, blocks=button_blocks(self.buttons) or None
            )
        except SlackApiError as err:
            if self.streamer.ts is None and err.response.get("error") in _STREAM_UNAVAILABLE:
                await self._refused(err, text, final)
                return
            raise
        self.sent = len(text)
        self._note()


# -- messages the assistant starts (reminders, core/reminders/dispatch.py) -------------------

REMINDER_EVENT = "confidante_reminder"  # message metadata: which occurrence a message delivered
_CHAT_GONE = {"channel_not_found", "is_archived", "not_in_channel", "account_inactive", "user_disabled"}
ClientFor = Callable[[str], Awaitable[AsyncWebClient | None]]


async def send_first(
    client_for: ClientFor,
    on_gone: Callable[[str], Awaitable[None]],
    chat_id: str,
    text: str,
    *,
    key: str,
    thread_id: str | None = None,
    buttons: list[Button] | None = None,
) -> str:
    """chat.postMessage into the chat a reminder was set in ("TEAM:D…" is the person's DM),
    tagged with the occurrence id as message metadata so `find_sent` can recognise it."""
    from core.reminders.dispatch import ChatGone

    team, channel = chat_id.split(":", 1)
    client = await client_for(team)
    if client is None:  # the workspace uninstalled the app
        await on_gone(chat_id)
        raise ChatGone(chat_id)
    try:
        blocks = [*text_blocks(markdown_to_mrkdwn(text)), *button_blocks(buttons)] if buttons else None
        response = await client.chat_postMessage(
            channel=channel,
            thread_ts=thread_id,
            text=text,
            blocks=blocks,
            metadata={"event_type": REMINDER_EVENT, "event_payload": {"occurrence": key}},
        )
    except SlackApiError as err:
        if err.response.get("error") in _CHAT_GONE:
            await on_gone(chat_id)
            raise ChatGone(chat_id) from err
        raise
    return str(response["ts"])


async def find_sent(client_for: ClientFor, chat_id: str, key: str) -> str | None:
    """The ts of a message that already delivered occurrence `key` (a run killed between
    Slack accepting it and recording it), from the chat's recent history; None if none."""
    team, channel = chat_id.split(":", 1)
    client = await client_for(team)
    if client is None:
        return None
    history = await client.conversations_history(channel=channel, limit=100, include_all_metadata=True)
    for message in history.get("messages", []):
        meta = message.get("metadata") or {}
        if (
            meta.get("event_type") == REMINDER_EVENT
            and (meta.get("event_payload") or {}).get("occurrence") == key
        ):
            return str(message["ts"])
    return None


async def user_zone(client_for: ClientFor, account: str) -> str | None:
    """The IANA time zone of a Slack account ("TEAM:USER") from users.info, for reminders."""
    team, user = account.split(":", 1)
    client = await client_for(team)
    if client is None:
        return None
    info = await client.users_info(user=user)
    return (info.get("user") or {}).get("tz") or None
