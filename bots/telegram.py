"""Telegram channel: python-telegram-bot's Application in, the core's replies out.

`confidante run` starts `run_telegram(assistant, settings)` beside the other platforms in one
event loop. Long polling by default; with `CONFIDANTE_TELEGRAM_WEBHOOK_URL` the app serves its
own webhook endpoint and registers it with a secret token.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import structlog
from telegram import (
    BotCommand,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    Message,
    Update,
)
from telegram.constants import ChatAction, ChatMemberStatus
from telegram.error import InvalidToken, NetworkError, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    ChatMemberHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from bots import telegram_media
from bots.channel import (
    ChannelAssistant,
    ChatLocks,
    RecentIds,
    Throttle,
    answer,
    drain,
    keep_alive,
    with_admin_flag,
)
from bots.settings import ChannelSettings
from bots.telegram_incoming import (
    PLATFORM,
    UNREADABLE_REPLY,
    BotIdentity,
    missing_field,
    to_incoming,
)
from bots.telegram_send import ChatGone, Sender, StreamRenderer, StreamTarget, send_first
from bots.telegram_webhook import WebhookServer
from core import recovery
from core.media.reader import MediaReader
from core.messages import Button, Incoming, Reply
from core.reminders.dispatch import Channel as ReminderChannel

log = structlog.get_logger(__name__)

ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "my_chat_member"]
_COMMAND_NAME = re.compile(r"^[a-z0-9_]{1,32}$")
_SECRET_OK = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
EMPTY_REPLY = "I came up with nothing to say to that. Could you put it another way?"
BUTTON_EXPIRED = "This button has expired. Please send the command again."


@dataclass(frozen=True)
class Origin:
    """Where an answer goes: known from the message alone, so a restart can answer it too."""

    chat_id: int
    direct: bool
    thread: int | None
    quote: int | None  # the message a group answer quotes

    @classmethod
    def of(cls, incoming: Incoming, quote: int | None = None) -> Origin:
        if quote is None and incoming.message_id.isdigit():
            quote = int(incoming.message_id)
        thread = incoming.thread_id
        return cls(
            chat_id=int(incoming.chat_id),
            direct=incoming.chat_kind == "direct",
            thread=int(thread) if thread and thread.lstrip("-").isdigit() else None,
            quote=quote,
        )


class RecordingQueue(asyncio.Queue):
    """PTB's update queue, recording each update in the inbox before it is queued.

    The updater confirms a batch of updates to Telegram (the next getUpdates offset) right
    after putting it here, and the webhook answers 200 after it: so what Telegram forgets is
    already in the inbox, and a crash before the reply leaves it there to answer at the start.
    """

    def __init__(self, record: Callable[[object], Awaitable[None]]) -> None:
        super().__init__()
        self._record = record

    async def put(self, item: object) -> None:
        await self._record(item)
        await super().put(item)


class TelegramConfigError(RuntimeError):
    """The Telegram settings cannot work; the message says what to change."""


def _file_url(api_url: str) -> str:
    """The file endpoint that belongs to a Bot API base URL ("…/bot" -> "…/file/bot")."""
    return api_url[: -len("bot")] + "file/bot" if api_url.endswith("/bot") else api_url


class TelegramChannel:
    def __init__(self, assistant: ChannelAssistant, settings: ChannelSettings) -> None:
        if settings.telegram.bot_token is None:
            raise TelegramConfigError(
                "TELEGRAM_BOT_TOKEN is not set: get a token from @BotFather and set it."
            )
        self.assistant = assistant
        self.settings = settings
        self.application = self._build_application()
        self.sender = Sender(self.application.bot, drafts=settings.telegram.drafts)
        self.throttle = Throttle(settings.telegram.edit_interval)
        self.seen = RecentIds()
        self.inactive: set[int] = set()
        self.me: BotIdentity | None = None
        self.commands: frozenset[str] = frozenset()
        self.webhook: WebhookServer | None = None
        self._lock = ChatLocks()
        self._buttons: OrderedDict[str, str] = OrderedDict()
        self._recovering: set[asyncio.Task[None]] = set()
        self._started = False
        self.media = MediaReader(settings) if settings.media_enabled else None

    # ---- setup -------------------------------------------------------------------------------

    def _build_application(self) -> Application:
        s = self.settings
        token = s.telegram.bot_token.get_secret_value()  # type: ignore[union-attr]
        builder = (
            Application.builder()
            .token(token)
            .rate_limiter(AIORateLimiter(max_retries=s.telegram.flood_retries))
            .concurrent_updates(True)
            .get_updates_read_timeout(s.telegram.poll_timeout + 10)
            .update_queue(RecordingQueue(self._record))
        )
        if s.telegram.api_url:
            builder = builder.base_url(s.telegram.api_url).base_file_url(_file_url(s.telegram.api_url))
        if s.telegram.webhook_url:
            builder = builder.updater(None)
        app = builder.build()
        app.add_handler(TypeHandler(Update, self._dedupe), group=-1)
        app.add_handler(MessageHandler(filters.UpdateType.MESSAGES, self._on_message))
        app.add_handler(CallbackQueryHandler(self._on_button))
        app.add_handler(ChatMemberHandler(self._on_membership, ChatMemberHandler.MY_CHAT_MEMBER))
        app.add_error_handler(self._on_error)
        return app

    def _webhook_secret(self) -> str:
        given = self.settings.telegram.webhook_secret
        if given is None:
            return secrets.token_urlsafe(32)  # registered with setWebhook below, so Telegram knows it
        value = given.get_secret_value()
        if not _SECRET_OK.match(value):
            raise TelegramConfigError(
                "CONFIDANTE_TELEGRAM_WEBHOOK_SECRET may hold only A-Z, a-z, 0-9, _ and - (1-256 characters)."
            )
        return value

    async def start(self) -> None:
        app = self.application
        try:
            await app.initialize()
        except InvalidToken as exc:
            raise TelegramConfigError(
                f"Telegram rejected TELEGRAM_BOT_TOKEN ({exc}); copy the token from @BotFather again."
            ) from exc
        except NetworkError as exc:
            where = self.settings.telegram.api_url or "https://api.telegram.org"
            raise TelegramConfigError(
                f"Could not reach the Telegram Bot API at {where} ({exc}); check the network or "
                "CONFIDANTE_TELEGRAM_API_URL."
            ) from exc
        self.me = BotIdentity(app.bot.id, app.bot.username)
        await self._register_commands()
        await app.start()
        for incoming in await self.assistant.unanswered(PLATFORM):
            self._recover(incoming)
        if self.settings.telegram.webhook_url:
            await self._start_webhook()
        else:
            assert app.updater is not None
            await app.updater.start_polling(
                timeout=self.settings.telegram.poll_timeout,
                allowed_updates=ALLOWED_UPDATES,
                drop_pending_updates=False,
                bootstrap_retries=3,
            )
        self._started = True
        self._attach_reminders()
        recovery.register(self.assistant, PLATFORM, self._recover)  # left unanswered while running
        log.info("telegram.started", bot=self.me.username, mode="webhook" if self.webhook else "polling")

    async def _start_webhook(self) -> None:
        s = self.settings
        url = s.telegram.webhook_url
        assert url is not None
        secret = self._webhook_secret()
        path = urlsplit(url).path or "/telegram"
        self.webhook = WebhookServer(
            self.application,
            secret=secret,
            path=path,
            host=s.telegram.webhook_listen,
            port=s.telegram.webhook_port,
        )
        await self.webhook.start()
        await self.application.bot.set_webhook(
            url=url, secret_token=secret, allowed_updates=ALLOWED_UPDATES, drop_pending_updates=False
        )

    async def _register_commands(self) -> None:
        commands: list[BotCommand] = []
        for name, description in self.assistant.command_list():
            bare = name.lstrip("/").lower()
            if not _COMMAND_NAME.match(bare) or not description:
                log.warning("telegram.command_skipped", command=name, reason="not a valid Telegram command")
                continue
            commands.append(BotCommand(bare, description[:256]))
        self.commands = frozenset(c.command for c in commands)
        try:
            await self.application.bot.set_my_commands(commands)
        except TelegramError as exc:  # the menu is a convenience; the bot works without it
            log.warning("telegram.set_commands_failed", error=str(exc))

    def _attach_reminders(self) -> None:
        """Reminders set in Telegram chats are sent from here (bots/telegram_send.send_first)."""
        reminders = getattr(self.assistant, "reminders", None)
        if reminders is not None:
            send = functools.partial(send_first, self.sender, self._gone, self._keyboard)
            reminders.dispatcher.attach(PLATFORM, ReminderChannel(send))

    async def stop(self, grace: float | None = None) -> None:
        """Take no new updates; let replies in progress finish for up to `grace` seconds (the
        shutdown grace period), then cut the rest: the inbox keeps them for the next start."""
        app = self.application
        reminders = getattr(self.assistant, "reminders", None)
        if reminders is not None:
            await reminders.dispatcher.detach(PLATFORM)
        recovery.unregister(self.assistant, PLATFORM)
        if app.updater is not None and app.updater.running:
            await app.updater.stop()
        if self.webhook is not None:
            await self.webhook.stop()
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        busy = self._busy()
        if busy:
            log.info("telegram.finishing_replies", replies=len(busy), grace_s=grace)
            _, cut = await asyncio.wait(busy, timeout=grace)
            for task in cut:
                task.cancel()
            if cut:
                log.warning("telegram.replies_cut", replies=len(cut))
                await asyncio.wait(cut, timeout=5)
        if app.running:
            await app.stop()
        await app.shutdown()
        self._started = False
        log.info("telegram.stopped")

    def _busy(self) -> set[asyncio.Task[object]]:
        """Replies in progress: PTB's handler tasks and answers to messages from before a restart."""
        handling = {t for t in asyncio.all_tasks() if t.get_name().endswith(":process_concurrent_update")}
        return {t for t in handling | self._recovering if not t.done()}

    # ---- updates -----------------------------------------------------------------------------

    async def _record(self, item: object) -> None:
        """Put a message update in the inbox (RecordingQueue); never let it stop the updater."""
        message = item.message if isinstance(item, Update) else None  # new messages only
        if message is None or self.me is None or missing_field(message) is not None:
            return
        try:
            mapped = to_incoming(message, self.me, commands=self.commands)
            if mapped.incoming is not None:
                await asyncio.to_thread(self.assistant.accept, mapped.incoming)
        except Exception as exc:  # the handler still answers it; only a crash could lose it now
            log.warning("telegram.inbox_record_failed", error=type(exc).__name__)

    async def _dedupe(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        field = missing_field(message) if message is not None else None
        if field is not None:
            log.warning("telegram.update_rejected", update_id=update.update_id, missing=f"message.{field}")
            raise ApplicationHandlerStop
        if not self.seen.add(update.update_id):
            log.info("telegram.duplicate_update", update_id=update.update_id)
            raise ApplicationHandlerStop

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or self.me is None:
            return
        edited = update.edited_message is not None
        mapped = to_incoming(message, self.me, edited=edited, commands=self.commands)
        chat_id = message.chat_id
        self.inactive.discard(chat_id)  # they are writing to us, so we can write back
        item = telegram_media.attachment(message) if self.media and not edited else None
        if item is not None:
            async with self._lock(chat_id):
                await self._guard(chat_id, self._on_media(message, item))
            return
        if mapped.unreadable and not edited:
            log.info("telegram.unreadable", chat_id=chat_id, kind=mapped.unreadable)
            async with self._lock(chat_id):
                await self._guard(
                    chat_id, self._send_text(message, UNREADABLE_REPLY.format(what=mapped.unreadable))
                )
            return
        incoming = mapped.incoming
        if incoming is None:
            return
        log.info(
            "telegram.message",
            chat_id=chat_id,
            chat_kind=incoming.chat_kind,
            addressed=incoming.addressed,
            edited=edited,
            chars=len(incoming.text),
        )
        if self.settings.log_content:
            log.debug("telegram.message_text", chat_id=chat_id, text=incoming.text)
        async with self._lock(chat_id):
            await self._answer_as_member(incoming, Origin.of(incoming))

    async def _on_media(self, message: Message, item: telegram_media.Attachment) -> None:
        """A voice note or photo: read it (bytes in memory only), then answer it like text."""
        assert self.media is not None and self.me is not None
        recorded = to_incoming(message, self.me, commands=self.commands).incoming
        with self.assistant.reading(recorded) if recorded else contextlib.nullcontext():
            got = await telegram_media.intake(
                self.application.bot, message, item, self.media, self.me, self.commands
            )
            if got.notice:
                await self._send_text(message, got.notice)
            if got.incoming is None:
                if recorded is not None:  # the inbox holds its caption: nothing is left to answer
                    self.assistant.dismiss(recorded)
            else:
                log.info(
                    "telegram.message", chat_id=message.chat_id, kind=item.kind, chars=len(got.incoming.text)
                )
                await self._answer_as_member(got.incoming, Origin.of(got.incoming))

    def _recover(self, incoming: Incoming) -> None:
        """Answer a message left unanswered (by an earlier run, or here when the connection
        dropped) beside the others; stop() waits for it like for any reply."""
        task = asyncio.create_task(self._answer_later(incoming))
        self._recovering.add(task)
        task.add_done_callback(self._recovering.discard)

    async def _answer_later(self, incoming: Incoming) -> None:
        """A message an earlier run received and never answered (it crashed or was cut off)."""
        origin = Origin.of(incoming)
        async with self._lock(origin.chat_id):
            await self._answer_as_member(incoming, origin)

    async def _answer_as_member(self, incoming: Incoming, origin: Origin) -> None:
        """Answer, first telling the core whether the sender administers the group when its
        rule for the command needs that (core/chat_admin.py refuses a member's /context off)."""
        incoming = await with_admin_flag(incoming, lambda: self._is_admin(incoming, origin))
        await self._answer(incoming, origin)

    async def _is_admin(self, incoming: Incoming, origin: Origin) -> bool:
        """Whether the sender administers this group (the core decides what that allows)."""
        if incoming.sender_id == incoming.chat_id:
            return True  # an anonymous admin speaks as the group itself
        member = await self.application.bot.get_chat_member(origin.chat_id, int(incoming.sender_id))
        return member.status in (ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR)

    async def _answer(self, incoming: Incoming, origin: Origin) -> None:
        chat_id = origin.chat_id

        async def show_typing() -> None:
            await self.application.bot.send_chat_action(
                chat_id, ChatAction.TYPING, message_thread_id=origin.thread
            )

        work = answer(
            self.assistant,
            incoming,
            lambda reply: self._deliver(reply, origin),
            lambda text: self._send(origin, text),
            platform=PLATFORM,
            passthrough=(ChatGone,),
            chat_id=chat_id,
        )
        if incoming.addressed and not incoming.edited:
            async with keep_alive(show_typing, self.settings.telegram.typing_interval):
                await self._guard(chat_id, work)
        else:
            await self._guard(chat_id, work)

    async def _guard(self, chat_id: int, work: Awaitable[None]) -> None:
        """Run a send; a 403 marks the chat inactive (logged once) instead of failing again and again."""
        try:
            await work
        except ChatGone as exc:
            await self._gone(chat_id, exc.reason)

    async def _gone(self, chat_id: int, reason: str) -> None:
        if chat_id in self.inactive:
            return
        self.inactive.add(chat_id)
        log.warning("telegram.chat_inactive", chat_id=chat_id, reason=reason)
        try:
            await self.assistant.chat_closed(PLATFORM, str(chat_id))
        except Exception:
            log.exception("telegram.chat_closed_failed", chat_id=chat_id)

    async def _send_text(self, message: Message, text: str) -> None:
        group = message.chat.type != "private"
        thread = message.message_thread_id if message.chat.is_forum and message.is_topic_message else None
        await self.sender.send(
            message.chat_id, text, thread_id=thread, reply_to=message.message_id if group else None
        )

    async def _send(self, origin: Origin, text: str) -> None:
        await self.sender.send(
            origin.chat_id, text, thread_id=origin.thread, reply_to=None if origin.direct else origin.quote
        )

    async def _deliver(self, reply: Reply, origin: Origin) -> None:
        chat_id = origin.chat_id
        thread = origin.thread
        if reply.thread_id and reply.thread_id.isdigit():
            thread = int(reply.thread_id)
        reply_to: int | None = None
        if not origin.direct:  # in a group, quote what we answer; a direct chat needs no quoting
            asked = reply.reply_to if reply.reply_to and reply.reply_to.isdigit() else None
            reply_to = int(asked) if asked else origin.quote
        target = StreamTarget(
            chat_id=chat_id,
            thread_id=thread,
            reply_to=reply_to,
            # a reply cut off by a restart continues in the message it had started
            use_draft=origin.direct and self.sender.drafts and not reply.earlier,
            markup=self._keyboard(reply.buttons),
        )
        renderer = StreamRenderer(
            self.sender, target, self.throttle, earlier=reply.earlier, on_sent=reply.sent
        )
        if chat_id in self.inactive:
            await drain(reply, close=True)
            return
        try:
            text = reply.text
            if reply.stream is not None:
                text = await renderer.run(reply.stream)
            elif reply.text.strip():
                await renderer.show(reply.text, final=True)
            if not text.strip() and reply.document is None:
                await renderer.show(EMPTY_REPLY, final=True)
            if reply.document is not None:
                doc = reply.document
                sent = await self.sender.call(
                    chat_id,
                    self.application.bot.send_document,
                    document=InputFile(doc.content, filename=doc.filename),
                    message_thread_id=thread,
                )
                reply.sent(sent.message_id)
        except ChatGone:
            await drain(reply, close=True)
            raise

    # ---- buttons -----------------------------------------------------------------------------

    def _button_data(self, command: str) -> str:
        """callback_data holds at most 64 bytes: longer commands are kept here behind a token."""
        data = f"c:{command}"
        if len(data.encode()) <= 64:
            return data
        token = secrets.token_urlsafe(12)
        self._buttons[token] = command
        while len(self._buttons) > 10_000:
            self._buttons.popitem(last=False)
        return f"t:{token}"

    def _keyboard(self, buttons: list[Button]) -> InlineKeyboardMarkup | None:
        if not buttons:
            return None
        row = [InlineKeyboardButton(b.label, callback_data=self._button_data(b.command)) for b in buttons]
        return InlineKeyboardMarkup([row])

    def _command_for(self, data: str) -> str | None:
        if data.startswith("c:"):
            return data[2:]
        if data.startswith("t:"):
            return self._buttons.pop(data[2:], None)
        return None

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query: CallbackQuery | None = update.callback_query
        if query is None or query.message is None:
            return
        command = self._command_for(query.data or "")
        try:
            await query.answer(text=None if command else BUTTON_EXPIRED)
        except TelegramError as exc:
            log.debug("telegram.answer_callback_failed", error=str(exc))
        if command is None:
            return
        message = query.message
        try:
            await query.edit_message_reply_markup(reply_markup=None)  # one press per keyboard
        except TelegramError as exc:
            log.debug("telegram.remove_keyboard_failed", error=str(exc))
        chat = message.chat
        kind = "direct" if chat.type == "private" else "group"
        thread = getattr(message, "message_thread_id", None) if chat.is_forum else None
        incoming = Incoming(
            platform=PLATFORM,
            chat_id=str(chat.id),
            sender_id=str(query.from_user.id),
            text=command,
            message_id=f"cb:{query.id}",
            chat_kind=kind,  # type: ignore[arg-type]
            sender_name=query.from_user.full_name,
            thread_id=str(thread) if thread else None,
            addressed=True,
        )
        log.info("telegram.button", chat_id=chat.id, chat_kind=kind)
        if isinstance(message, Message):
            async with self._lock(chat.id):
                await self._answer_as_member(incoming, Origin.of(incoming, quote=message.message_id))

    # ---- membership and errors ---------------------------------------------------------------

    async def _on_membership(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        change = update.my_chat_member
        if change is None:
            return
        status = change.new_chat_member.status
        chat_id = change.chat.id
        if status in (ChatMemberStatus.BANNED, ChatMemberStatus.LEFT):
            await self._gone(chat_id, f"bot is now {status}")
        elif status in (ChatMemberStatus.MEMBER, ChatMemberStatus.ADMINISTRATOR):
            self.inactive.discard(chat_id)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("telegram.handler_error", error=type(context.error).__name__, exc_info=context.error)


async def run_telegram(assistant: ChannelAssistant, settings: ChannelSettings) -> None:
    """Run the Telegram channel until cancelled (the CLI cancels it on shutdown)."""
    channel = TelegramChannel(assistant, settings)
    await channel.start()
    try:
        await asyncio.Event().wait()
    finally:
        await channel.stop()
