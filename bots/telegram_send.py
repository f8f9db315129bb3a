"""Sending to Telegram without losing text: HTML first, plain on refusal, retries on network errors.

Flood control (429 `RetryAfter`) is handled one level below by PTB's `AIORateLimiter`, which
waits the time Telegram asks and retries; here we retry what the rate limiter does not:
connection failures and 5xx answers, with exponential backoff. A 403 (blocked, kicked, chat
deleted) is never retried: it becomes `ChatGone` and the chat is marked inactive.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from telegram import Bot, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.constants import MessageLimit, ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    TelegramError,
)
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from bots.channel import Throttle, split_text, stream_edits, utf16_len
from bots.telegram_render import markdown_to_telegram_html

log = structlog.get_logger(__name__)

T = TypeVar("T")
LIMIT = MessageLimit.MAX_TEXT_LENGTH  # 4096, counted after entity parsing, in UTF-16 units


class ChatGone(Exception):
    """Telegram refused with 403: the bot was blocked, kicked, or the chat was deleted."""

    def __init__(self, chat_id: int | str, reason: str) -> None:
        super().__init__(f"chat {chat_id} is gone: {reason}")
        self.chat_id = chat_id
        self.reason = reason


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, NetworkError) and not isinstance(exc, BadRequest)


def _formatting_refused(exc: BadRequest) -> bool:
    text = str(exc).lower()
    return "parse entities" in text or "can't find end" in text or "unsupported start tag" in text


def _not_modified(exc: BadRequest) -> bool:
    return "not modified" in str(exc).lower()


@dataclass
class Sender:
    """All writes to Telegram go through here."""

    bot: Bot
    attempts: int = 5
    backoff: float = 0.5
    drafts: bool = True  # turned off for good the first time the Bot API says it has no drafts
    _draft_ids: itertools.count = field(default_factory=lambda: itertools.count(random.randint(1, 1 << 20)))

    async def call(self, chat_id: int | str, fn: Callable[..., Awaitable[T]], /, **kwargs: Any) -> T:
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_transient),
                wait=wait_exponential(multiplier=self.backoff, max=10),
                stop=stop_after_attempt(self.attempts),
                reraise=True,
            ):
                with attempt:
                    return await fn(chat_id=chat_id, **kwargs)
        except Forbidden as exc:
            raise ChatGone(chat_id, str(exc)) from exc
        except ChatMigrated as exc:  # a group became a supergroup: same people, new id
            log.info("telegram.chat_migrated", chat_id=chat_id, new_chat_id=exc.new_chat_id)
            return await self.call(exc.new_chat_id, fn, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover

    def new_draft_id(self) -> int:
        return next(self._draft_ids)

    async def send(
        self,
        chat_id: int | str,
        markdown: str,
        *,
        thread_id: int | None = None,
        reply_to: int | None = None,
        markup: InlineKeyboardMarkup | None = None,
    ) -> Message:
        """One message of at most LIMIT; formatted, or plain when Telegram refuses the formatting."""
        common: dict[str, Any] = {"message_thread_id": thread_id, "reply_markup": markup}
        if reply_to is not None:
            common["reply_parameters"] = ReplyParameters(reply_to, allow_sending_without_reply=True)
        rendered = markdown_to_telegram_html(markdown)
        if rendered:
            try:
                return await self.call(
                    chat_id, self.bot.send_message, text=rendered, parse_mode=ParseMode.HTML, **common
                )
            except BadRequest as exc:
                if not _formatting_refused(exc):
                    raise
                log.warning("telegram.format_refused", chat_id=chat_id, error=str(exc))
        return await self.call(chat_id, self.bot.send_message, text=markdown, **common)

    async def edit(
        self,
        chat_id: int | str,
        message_id: int,
        markdown: str,
        *,
        markup: InlineKeyboardMarkup | None = None,
    ) -> None:
        rendered = markdown_to_telegram_html(markdown)
        try:
            if rendered:
                try:
                    await self.call(
                        chat_id,
                        self.bot.edit_message_text,
                        message_id=message_id,
                        text=rendered,
                        parse_mode=ParseMode.HTML,
                        reply_markup=markup,
                    )
                    return
                except BadRequest as exc:
                    if not _formatting_refused(exc):
                        raise
                    log.warning("telegram.format_refused", chat_id=chat_id, error=str(exc))
            await self.call(
                chat_id, self.bot.edit_message_text, message_id=message_id, text=markdown, reply_markup=markup
            )
        except BadRequest as exc:
            if not _not_modified(exc):
                raise

    async def draft(self, chat_id: int | str, draft_id: int, markdown: str, thread_id: int | None) -> bool:
        """Show a draft; False (and drafts off from now on) when this Bot API server has none."""
        if not self.drafts:
            return False
        rendered = markdown_to_telegram_html(markdown)
        try:
            if rendered:
                await self.call(
                    chat_id,
                    self.bot.send_message_draft,
                    draft_id=draft_id,
                    text=rendered,
                    parse_mode=ParseMode.HTML,
                    message_thread_id=thread_id,
                )
            else:
                await self.call(
                    chat_id,
                    self.bot.send_message_draft,
                    draft_id=draft_id,
                    text=markdown,
                    message_thread_id=thread_id,
                )
            return True
        except (EndPointNotFound, InvalidToken) as exc:
            # an older self-hosted Bot API server: 404 for the unknown method
            log.warning("telegram.drafts_unavailable", error=str(exc))
            self.drafts = False
            return False
        except BadRequest as exc:
            if _formatting_refused(exc):
                return True  # a partial draft that does not parse: the next one will, and finals fall back
            log.warning("telegram.drafts_unavailable", error=str(exc))
            self.drafts = False
            return False


@dataclass
class _Part:
    message_id: int | None = None
    shown: str | None = None
    final: bool = False


@dataclass
class StreamTarget:
    """Where a reply goes and how it may be shown while it is being written."""

    chat_id: int
    thread_id: int | None = None
    reply_to: int | None = None
    use_draft: bool = False  # direct chats: sendMessageDraft, then one sendMessage per part
    markup: InlineKeyboardMarkup | None = None


class StreamRenderer:
    """Shows a growing reply: drafts in direct chats, else one message edited as text arrives.

    Edits are throttled per chat; text past the 4096 limit continues in a new message, so a
    long reply arrives as several messages in order. The stream is always read to its end
    (the assistant records its turn then), even while Telegram is slow.
    """

    def __init__(
        self,
        sender: Sender,
        target: StreamTarget,
        throttle: Throttle,
        *,
        earlier: Sequence[str] = (),
        on_sent: Callable[[int], None] | None = None,
    ) -> None:
        """`earlier`: ids of messages an earlier run sent for this reply (continued, not sent
        again); `on_sent` hears each new message's id as soon as Telegram returns it."""
        self.sender = sender
        self.target = target
        self.throttle = throttle
        self.on_sent = on_sent
        self.parts: list[_Part] = [_Part(message_id=int(i)) for i in earlier if i.isdigit()]
        self.draft_id = sender.new_draft_id() if target.use_draft else 0
        self.first_shown_at: float | None = None

    def _sent(self, message_id: int) -> None:
        if self.on_sent is not None:
            self.on_sent(message_id)

    def _split(self, text: str) -> list[str]:
        return split_text(text, LIMIT, length=utf16_len)

    async def _show_final(self, index: int, text: str, last: bool) -> None:
        markup = self.target.markup if last else None
        while len(self.parts) <= index:
            self.parts.append(_Part())
        part = self.parts[index]
        if part.final and part.shown == text:
            return
        if part.message_id is None:
            msg = await self.sender.send(
                self.target.chat_id,
                text,
                thread_id=self.target.thread_id,
                reply_to=self.target.reply_to if index == 0 else None,
                markup=markup,
            )
            part.message_id = msg.message_id
            self._sent(msg.message_id)
        elif part.shown != text or markup is not None:
            await self.sender.edit(self.target.chat_id, part.message_id, text, markup=markup)
        part.shown, part.final = text, True

    async def _show_live(self, index: int, text: str) -> None:
        while len(self.parts) <= index:
            self.parts.append(_Part())
        part = self.parts[index]
        if part.shown == text:
            return
        use_draft = self.target.use_draft and self.sender.drafts
        if use_draft and await self.sender.draft(
            self.target.chat_id, self.draft_id, text, self.target.thread_id
        ):
            part.shown = text
            return
        if part.message_id is None:
            msg = await self.sender.send(
                self.target.chat_id,
                text,
                thread_id=self.target.thread_id,
                reply_to=self.target.reply_to if index == 0 else None,
            )
            part.message_id = msg.message_id
            self._sent(msg.message_id)
        else:
            await self.sender.edit(self.target.chat_id, part.message_id, text)
        part.shown = text

    async def show(self, text: str, *, final: bool) -> None:
        chunks = self._split(text)
        if not chunks:
            return
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            if final or not last:
                await self._show_final(i, chunk, last and final)
            else:
                await self._show_live(i, chunk)
        if self.first_shown_at is None:
            self.first_shown_at = asyncio.get_running_loop().time()

    async def run(self, stream: AsyncIterator[str]) -> str:
        """Read the stream to its end while showing it; returns the whole text."""

        async def show(text: str, final: bool) -> None:
            await self.show(text, final=final)

        # ChatGone is no TelegramError: a blocked chat stops the loop, a failed edit does not
        return await stream_edits(stream, show, self.throttle, self.target.chat_id, tolerate=(TelegramError,))


async def send_first(
    sender: Sender,
    on_gone: Callable[[int, str], Awaitable[None]],
    keyboard: Callable[[list[Any]], InlineKeyboardMarkup | None],
    chat_id: str,
    text: str,
    *,
    key: str,
    thread_id: str | None = None,
    buttons: Sequence[Any] = (),
) -> str:
    """A message the assistant starts (a reminder): sendMessage with no message to answer.

    Telegram has no idempotency key, so `key` is unused here (see core/reminders/dispatch.py).
    A chat that blocked the bot is marked inactive once (`on_gone`) and the reminder stops."""
    from core.reminders.dispatch import ChatGone as ReminderChatGone

    try:
        message = await sender.send(
            int(chat_id),
            text,
            thread_id=int(thread_id) if thread_id else None,
            markup=keyboard(list(buttons)),
        )
    except ChatGone as exc:
        await on_gone(int(chat_id), exc.reason)
        raise ReminderChatGone(chat_id) from exc
    return str(message.message_id)
