"""Slack channel: a slack-bolt async app that hands messages to the core and streams replies back.

Events arrive by Socket Mode when `SLACK_APP_TOKEN` is set (no public URL needed) or else by the
HTTP Events API served here (bolt verifies Slack's signature). Bolt acknowledges each event
before our listener runs; the listener only schedules the reply as a task, so Slack gets its ack
within milliseconds however slow the model is, and a retried delivery (same event_id) is dropped.
With `SLACK_CLIENT_ID`/`SLACK_CLIENT_SECRET` the app runs bolt's OAuth flow and keeps every
workspace's installation in the data dir.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bots import slack_media, slack_oauth
from bots.channel import ChannelAssistant, ChatLocks, RecentIds, answer, drain, with_admin_flag
from bots.settings import ChannelSettings
from bots.slack_events import (
    PLATFORM,
    ThreadMemory,
    event_team,
    missing_field,
    scoped,
    slash_command_text,
    to_incoming,
)
from bots.slack_home import home_view
from bots.slack_render import render_pieces
from bots.slack_reply import (
    BUTTON_ACTION_PREFIX,
    ReplySender,
    Target,
    button_blocks,
    find_sent,
    send_first,
    text_blocks,
    user_zone,
)
from core import recovery
from core.media.reader import MediaReader
from core.messages import Incoming, Reply
from core.reminders.dispatch import Channel as ReminderChannel

log = structlog.get_logger(__name__)

DEFAULT_API_URL = "https://slack.com/api/"
EVENTS_PATH = "/slack/events"
# Errors that no retry fixes: the token is wrong or the workspace is gone.
_AUTH_ERRORS = {
    "invalid_auth": "the bot token was rejected: copy the Bot User OAuth Token (xoxb-…) again "
    "from the app's OAuth & Permissions page into SLACK_BOT_TOKEN, or reinstall the app",
    "not_authed": "no token was sent: set SLACK_BOT_TOKEN (or install via /slack/install)",
    "account_inactive": "the workspace or the bot user was deactivated: reinstall the app "
    "in that workspace or remove its installation",
    "token_revoked": "the token was revoked: reinstall the app in that workspace",
    "token_expired": "the token expired: reinstall the app or enable token rotation",
}


class SlackSetupError(RuntimeError):
    """Slack settings are missing or rejected; the message says what to set."""


@dataclass
class Endpoints:
    """Where the running app listens (HTTP mode or OAuth routes); None when not serving HTTP."""

    http_url: str | None = None


def api_url(settings: ChannelSettings) -> str:
    url = settings.slack.api_url or DEFAULT_API_URL
    return url if url.endswith("/") else url + "/"


def build_client(settings: ChannelSettings, token: str | None) -> AsyncWebClient:
    """A Web API client that waits out 429s (Retry-After) and backs off on 5xx/connection errors."""
    backoff = BackoffRetryIntervalCalculator(backoff_factor=0.5)
    return AsyncWebClient(
        token=token,
        base_url=api_url(settings),
        retry_handlers=[
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
            AsyncServerErrorRetryHandler(max_retry_count=3, interval_calculator=backoff),
            AsyncConnectionErrorRetryHandler(max_retry_count=3, interval_calculator=backoff),
        ],
    )


class SlackBot:
    """The Slack channel. `start()` connects (Socket Mode) or listens (HTTP); `stop()` ends it."""

    def __init__(self, assistant: ChannelAssistant, settings: ChannelSettings) -> None:
        self.assistant = assistant
        self.settings = settings
        self.socket_mode = settings.slack.app_token is not None
        self.multi_workspace = bool(settings.slack.client_id and settings.slack.client_secret)
        if not self.multi_workspace and settings.slack.bot_token is None:
            raise SlackSetupError(
                "Slack needs SLACK_BOT_TOKEN (one workspace) or SLACK_CLIENT_ID and "
                "SLACK_CLIENT_SECRET (installable in many workspaces); see the Slack section of the README"
            )
        if not self.socket_mode and settings.slack.signing_secret is None:
            raise SlackSetupError(
                "HTTP mode needs SLACK_SIGNING_SECRET (Basic Information > App Credentials), "
                "or set SLACK_APP_TOKEN (xapp-…) to use Socket Mode instead"
            )
        self.sender = ReplySender(
            stream_mode=settings.slack.stream_mode, update_interval=settings.slack.update_interval
        )
        self.endpoints = Endpoints()
        # Slack retries an event up to three times over about an hour: ids live for two hours
        self._seen = RecentIds(maxlen=50_000, ttl=7200.0)
        self._lock = ChatLocks()
        self._threads = ThreadMemory(path=settings.data_dir / "slack" / "threads.tsv")
        self._tasks: set[asyncio.Task[None]] = set()
        self._reported: set[tuple[str, str]] = set()
        self._runner: web.AppRunner | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self.installation_store: slack_oauth.PrivateFileInstallationStore | None = None
        self.media = MediaReader(settings) if settings.media_enabled else None
        self.app = self._build_app()

    # ------------------------------------------------------------------ app wiring
    def _build_app(self) -> AsyncApp:
        s = self.settings
        token = s.slack.bot_token.get_secret_value() if s.slack.bot_token else None
        signing = s.slack.signing_secret.get_secret_value() if s.slack.signing_secret else ""
        if self.multi_workspace:
            data_dir = s.ensure_data_dir()
            self.installation_store = slack_oauth.installation_store(data_dir, s.slack.client_id)
            oauth = AsyncOAuthSettings(
                client_id=s.slack.client_id,
                client_secret=s.slack.client_secret.get_secret_value(),  # type: ignore[union-attr]
                scopes=slack_oauth.BOT_SCOPES,
                installation_store=self.installation_store,
                state_store=slack_oauth.state_store(data_dir),
                redirect_uri=(s.slack.public_url.rstrip("/") + "/slack/oauth_redirect")
                if s.slack.public_url
                else None,
            )
            app = AsyncApp(
                client=build_client(s, None),
                signing_secret=signing,
                oauth_settings=oauth,
                request_verification_enabled=not self.socket_mode or bool(signing),
            )
            app.enable_token_revocation_listeners()
        else:
            app = AsyncApp(
                client=build_client(s, token),
                signing_secret=signing,
                request_verification_enabled=not self.socket_mode or bool(signing),
            )
            app.event("app_uninstalled")(self._on_uninstalled)
            app.event("tokens_revoked")(self._on_uninstalled)
        app.middleware(self._record_first)
        app.event("message")(self._on_message)
        app.event("app_mention")(self._on_message)
        app.event("app_home_opened")(self._on_home_opened)
        for name in ("channel_left", "group_left"):
            app.event(name)(self._on_left)
        for name in ("assistant_thread_started", "assistant_thread_context_changed", "member_joined_channel"):
            app.event(name)(self._ignore)
        app.command("/confidante")(self._on_command)
        app.action(re.compile(f"^{BUTTON_ACTION_PREFIX}"))(self._on_action)
        app.error(self._on_error)
        return app

    async def _on_uninstalled(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        """Single-workspace mode: the one token is dead; say so once (multi-workspace mode
        deletes that workspace's installation instead, via bolt's revocation listeners)."""
        team = event_team(body, event)
        if ("uninstalled", team) not in self._reported:
            self._reported.add(("uninstalled", team))
            log.error(
                "slack.uninstalled",
                team=team,
                event=event.get("type"),
                fix="reinstall the app in that workspace and put its new bot token in SLACK_BOT_TOKEN",
            )

    async def _ignore(self) -> None:
        return None

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        log.error("slack.listener_failed", error=type(error).__name__, event_id=body.get("event_id"))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("slack.reply_task_failed", error=repr(task.exception()))

    async def drain(self, timeout: float = 60.0) -> None:
        """Wait for replies in progress (shutdown, tests)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._tasks:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            await asyncio.wait(set(self._tasks), timeout=left)

    def _known_commands(self) -> list[str]:
        try:
            return [name.lstrip("/") for name, _ in self.assistant.command_list()]
        except Exception:  # a core without commands still gets messages through
            return []

    # ------------------------------------------------------------------ events
    def _read(self, body: dict[str, Any], event: dict[str, Any], bot_user_id: str | None) -> Incoming | None:
        return to_incoming(
            body, event, bot_user_id=bot_user_id, threads=self._threads, known_commands=self._known_commands()
        )

    async def _record_first(self, body: dict[str, Any], context: Any, next: Any) -> None:  # noqa: A002
        """bolt middleware: a message event goes into the inbox before bolt acknowledges it
        (HTTP 200 or the Socket Mode ack), so an event Slack will not send again is never lost."""
        event = body.get("event") if body.get("type") == "event_callback" else None
        if isinstance(event, dict) and missing_field(body, event) is None:
            try:
                msg = self._read(body, event, context.bot_user_id)
                if msg is not None and not msg.edited:
                    await asyncio.to_thread(self.assistant.accept, msg)
            except Exception as err:  # the listener still answers it; only a crash could lose it
                log.warning("slack.inbox_record_failed", error=type(err).__name__)
        await next()

    async def _on_message(
        self, body: dict[str, Any], event: dict[str, Any], context: Any, client: Any
    ) -> None:
        field = missing_field(body, event)
        if field is not None:
            log.warning("slack.event_rejected", event_id=body.get("event_id"), missing=field)
            return
        event_id = str(body.get("event_id") or "")
        if event_id and not self._seen.add(event_id):
            log.info("slack.retry_dropped", event_id=event_id)
            return
        team = event_team(body, event)
        if event.get("subtype") == "message_deleted":
            deleted = (event.get("previous_message") or {}).get("ts") or event.get("deleted_ts")
            if deleted and team:
                chat = scoped(team, str(event.get("channel")))
                self._spawn(self.assistant.redact(PLATFORM, chat, str(deleted)))
            return
        msg = self._read(body, event, context.bot_user_id)
        if msg is None:
            return
        if not self._seen.add(f"{msg.chat_id}/{msg.message_id}/{int(msg.edited)}"):
            return  # the message and app_mention events of one message
        log.info(
            "slack.message",
            team=team,
            chat_kind=msg.chat_kind,
            addressed=msg.addressed,
            chars=len(msg.text),
            retry=body.get("retry_attempt") or None,
        )
        item = slack_media.media_file(event) if self.media and not msg.edited else None
        if item is not None:
            self._spawn(self._respond_media(client, msg, item))
            return
        self._spawn(self._respond(client, msg, _target(msg)))

    async def _respond_media(
        self, client: AsyncWebClient, msg: Incoming, item: slack_media.SlackFile
    ) -> None:
        """An audio clip or image: read it (bytes in memory only), then answer it like text."""
        assert self.media is not None
        with self.assistant.reading(msg):
            got = await slack_media.intake(msg, item, client.token or "", self.media, self.settings)
            if got.notice:
                await self._safe_post(client, _target(msg), got.notice)
            if got.incoming is None:
                self.assistant.dismiss(msg)  # recorded in the inbox on arrival: nothing is left to answer
            else:
                await self._respond(client, got.incoming, _target(got.incoming))

    async def _respond(self, client: AsyncWebClient, msg: Incoming, target: Target) -> None:
        if msg.addressed and msg.chat_kind == "group" and target.thread_ts:
            self._threads.add(target.team_id, target.channel, target.thread_ts)
        msg = await with_admin_flag(msg, lambda: self._is_admin(client, target))
        async with self._lock(msg.chat_id):
            status = False
            if msg.addressed and target.thread_ts and not msg.edited:
                status = await self._set_status(client, target, "is thinking…")

            async def deliver(reply: Reply) -> None:
                silent = reply.stream is None and not reply.text.strip() and not reply.buttons
                if silent and reply.document is None:
                    if status:
                        await self._set_status(client, target, "")
                    return
                await self._deliver(client, reply, target)

            await answer(
                self.assistant,
                msg,
                deliver,
                lambda text: self._safe_post(client, target, text),
                platform=PLATFORM,
                team=target.team_id,
            )

    async def _is_admin(self, client: AsyncWebClient, target: Target) -> bool:
        """Whether the sender administers this channel: a workspace admin or owner
        (users.info), or the channel's creator (conversations.info)."""
        user = (await client.users_info(user=target.user_id))["user"]
        if user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"):
            return True
        channel = (await client.conversations_info(channel=target.channel))["channel"]
        return channel.get("creator") == target.user_id

    async def _deliver(self, client: AsyncWebClient, reply: Reply, target: Target) -> None:
        try:
            await self.sender.send(client, reply, target)
        except SlackApiError as err:
            self._report(err, target.team_id)
        finally:
            await drain(reply)  # the core records its turn when the stream ends

    async def _set_status(self, client: AsyncWebClient, target: Target, status: str) -> bool:
        try:
            await client.assistant_threads_setStatus(
                channel_id=target.channel, thread_ts=target.thread_ts, status=status
            )
            return True
        except SlackApiError as err:
            log.debug("slack.status_unavailable", error=err.response.get("error"))
            return False

    async def _safe_post(self, client: AsyncWebClient, target: Target, text: str) -> None:
        try:
            await client.chat_postMessage(channel=target.channel, thread_ts=target.thread_ts, text=text)
        except SlackApiError as err:
            self._report(err, target.team_id)

    def _report(self, err: SlackApiError, team: str) -> None:
        """Auth errors once per workspace with what to do; others every time, without content."""
        code = str(err.response.get("error") or "unknown")
        hint = _AUTH_ERRORS.get(code)
        if hint is None:
            log.error("slack.api_error", team=team, error=code)
            return
        if (team, code) in self._reported:
            return
        self._reported.add((team, code))
        log.error("slack.auth_error", team=team, error=code, fix=hint)

    async def _on_left(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        team = event_team(body, event)
        channel = event.get("channel")
        if team and channel:
            self._spawn(self.assistant.chat_closed(PLATFORM, scoped(team, str(channel))))

    # ------------------------------------------------------------------ slash command and buttons
    async def _on_command(self, ack: Any, body: dict[str, Any], respond: Any, client: Any) -> None:
        await ack()
        team, user, channel = str(body.get("team_id")), str(body.get("user_id")), str(body.get("channel_id"))
        direct = channel.startswith("D") or body.get("channel_name") == "directmessage"
        msg = Incoming(
            platform=PLATFORM,
            chat_id=scoped(team, channel),
            workspace=team,
            sender_id=scoped(team, user),
            text=slash_command_text(str(body.get("text") or "")),
            message_id=f"cmd-{body.get('trigger_id')}",
            # in a channel the core applies that channel's scope (its /memory view, /context);
            # the answer is ephemeral either way, so only this person sees it
            chat_kind="direct" if direct else "group",
        )
        self._spawn(self._command_reply(client, respond, msg, team, user, channel))

    async def _command_reply(
        self, client: AsyncWebClient, respond: Any, msg: Incoming, team: str, user: str, channel: str
    ) -> None:
        target = Target(channel, None, team, user)
        msg = await with_admin_flag(msg, lambda: self._is_admin(client, target))
        try:
            reply = await self.assistant.handle(msg)
        except Exception as err:
            log.exception("slack.command_failed", error=type(err).__name__)
            await respond(
                text="Sorry, that command failed on my side. Please try again.", response_type="ephemeral"
            )
            return
        if reply is None:
            return
        text = await reply.collect()
        pieces = render_pieces(text)
        for i, piece in enumerate(pieces or [""]):
            blocks = text_blocks(piece) if piece else []
            if i == len(pieces) - 1 and reply.buttons:
                blocks += button_blocks(reply.buttons)
            if blocks:
                await respond(text=piece or "Choose an action", blocks=blocks, response_type="ephemeral")
        if reply.document is not None:
            try:
                opened = await client.conversations_open(users=user)
                dm = opened["channel"]["id"]
                await self.sender.send(client, Reply(document=reply.document), Target(dm, None, team, user))
            except SlackApiError as err:
                self._report(err, team)

    async def _on_action(
        self, ack: Any, body: dict[str, Any], action: dict[str, Any], client: Any, respond: Any
    ) -> None:
        await ack()
        team = str((body.get("team") or {}).get("id") or body.get("user", {}).get("team_id") or "")
        user = str((body.get("user") or {}).get("id") or "")
        container = body.get("container") or {}
        command = str(action.get("value") or "")
        if not team or not user or not command:
            return
        if container.get("type") == "view":  # App Home: act, then show the updated home
            msg = Incoming(
                platform=PLATFORM,
                chat_id=scoped(team, f"home-{user}"),
                workspace=team,
                sender_id=scoped(team, user),
                text=command,
                message_id=f"action-{action.get('action_ts')}",
            )
            self._spawn(self._home_action(client, msg, team, user))
            return
        channel = str(container.get("channel_id") or (body.get("channel") or {}).get("id") or "")
        thread = container.get("thread_ts")
        private = channel.startswith("D")
        msg = Incoming(
            platform=PLATFORM,
            chat_id=scoped(team, channel),
            workspace=team,
            sender_id=scoped(team, user),
            text=command,
            message_id=f"action-{action.get('action_ts')}",
            chat_kind="direct" if private else "group",
            thread_id=str(thread) if thread else None,
        )
        if container.get("is_ephemeral"):  # a button under a /confidante answer: answer privately too
            self._spawn(self._command_reply(client, respond, msg, team, user, channel))
        else:
            self._spawn(self._respond(client, msg, Target(channel, msg.thread_id, team, user)))

    # ------------------------------------------------------------------ App Home
    async def _on_home_opened(self, event: dict[str, Any], body: dict[str, Any], client: Any) -> None:
        if event.get("tab") not in (None, "home"):
            return
        team, user = event_team(body, event), str(event.get("user") or "")
        if team and user:
            self._spawn(self._publish_home(client, team, user, str(event.get("event_ts") or "")))

    async def _home_action(self, client: AsyncWebClient, msg: Incoming, team: str, user: str) -> None:
        reply = await self.assistant.handle(msg)
        if reply is not None:
            await reply.collect()
        await self._publish_home(client, team, user, msg.message_id)

    async def _publish_home(self, client: AsyncWebClient, team: str, user: str, nonce: str) -> None:
        msg = Incoming(
            platform=PLATFORM,
            chat_id=scoped(team, f"home-{user}"),
            workspace=team,
            sender_id=scoped(team, user),
            text="/memory",
            message_id=f"home-{nonce}",
        )
        try:
            reply = await self.assistant.handle(msg)
            text = await reply.collect() if reply is not None else ""
            await client.views_publish(user_id=user, view=home_view(text))
        except SlackApiError as err:
            self._report(err, team)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Check the token, then connect to Socket Mode and/or serve HTTP."""
        if not self.multi_workspace:
            try:
                auth = await self.app.client.auth_test()
            except SlackApiError as err:
                code = str(err.response.get("error"))
                raise SlackSetupError(
                    f"Slack rejected the bot token ({code}): {_AUTH_ERRORS.get(code, code)}"
                ) from err
            log.info("slack.authorized", team=auth.get("team_id"), bot_user=auth.get("user_id"))
        if self.socket_mode:
            app_token = self.settings.slack.app_token.get_secret_value()  # type: ignore[union-attr]
            try:  # the SDK's connect() retries forever, also on a token Slack will never accept
                await self.app.client.apps_connections_open(app_token=app_token)
            except SlackApiError as err:
                code = str(err.response.get("error"))
                raise SlackSetupError(
                    f"Slack rejected SLACK_APP_TOKEN ({code}): generate an app-level token (xapp-…) "
                    "with the connections:write scope under Basic Information > App-Level Tokens"
                ) from err
            self._socket = AsyncSocketModeHandler(
                self.app,
                app_token=self.settings.slack.app_token.get_secret_value(),  # type: ignore[union-attr]
            )
            await self._socket.connect_async()
            log.info("slack.socket_mode_connected")
        if not self.socket_mode or self.multi_workspace:
            web_app = self.app.web_app(path=EVENTS_PATH, port=self.settings.slack.http_port)
            secret = self.settings.slack.signing_secret
            web_app.middlewares.append(_guard(secret.get_secret_value() if secret else None))
            self._runner = web.AppRunner(web_app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.settings.slack.http_host, self.settings.slack.http_port)
            await site.start()
            host, port = self._runner.addresses[0][:2]
            self.endpoints.http_url = f"http://{host}:{port}"
            log.info("slack.http_listening", url=self.endpoints.http_url, events=EVENTS_PATH)

        await self._answer_unanswered()
        reminders = getattr(self.assistant, "reminders", None)
        if reminders is not None:  # reminders set in Slack are sent from here
            send = functools.partial(send_first, self._client_for, self._reminder_chat_gone)
            find = functools.partial(find_sent, self._client_for)
            reminders.dispatcher.attach(PLATFORM, ReminderChannel(send, find))
            reminders.zone_lookups[PLATFORM] = functools.partial(user_zone, self._client_for)

    async def _reminder_chat_gone(self, chat_id: str) -> None:
        await self.assistant.chat_closed(PLATFORM, chat_id)

    async def _answer_unanswered(self) -> None:
        """Messages an earlier run received (and Slack considers delivered) but never answered;
        later, those left unanswered while running (core/recovery.py)."""
        for msg in await self.assistant.unanswered(PLATFORM):
            await self._recover(msg)
        recovery.register(self.assistant, PLATFORM, self._recover)

    async def _recover(self, msg: Incoming) -> None:
        client = await self._client_for(msg.chat_id.split(":", 1)[0])
        if client is not None:
            self._spawn(self._respond(client, msg, _target(msg)))

    async def _client_for(self, team: str) -> AsyncWebClient | None:
        if not self.multi_workspace:
            return self.app.client
        assert self.installation_store is not None
        bot = await self.installation_store.async_find_bot(enterprise_id=None, team_id=team)
        if bot is None:
            log.warning("slack.no_installation", team=team)
            return None
        return build_client(self.settings, bot.bot_token)

    async def stop(self, grace: float | None = None) -> None:
        """Take no new events; give replies in progress `grace` seconds (the shutdown grace
        period), then cut the rest: the inbox keeps them for the next start."""
        reminders = getattr(self.assistant, "reminders", None)
        if reminders is not None:
            await reminders.dispatcher.detach(PLATFORM)
        recovery.unregister(self.assistant, PLATFORM)
        if self._socket is not None:
            await self._socket.close_async()
            self._socket = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        await self.drain(timeout=grace)
        if self._tasks:
            log.warning("slack.replies_cut", replies=len(self._tasks))
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)


def _target(msg: Incoming) -> Target:
    """Where a message's answer goes, from the message alone (so a restart can answer it)."""
    team, channel = msg.chat_id.split(":", 1)
    return Target(
        channel=channel, thread_ts=msg.thread_id, team_id=team, user_id=msg.sender_id.split(":", 1)[1]
    )


def _guard(signing_secret: str | None) -> Any:
    """aiohttp middleware in front of bolt's handler for `/slack/events`.

    Missing, blank or wrong signature headers are a 401 and a validly signed body that is not
    JSON or a form is a 400 with a message; bolt itself would answer both with a 500. Without a
    signing secret (Socket Mode serving only the OAuth pages) no event is accepted over HTTP.
    """
    verifier = SignatureVerifier(signing_secret) if signing_secret else None

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method != "POST" or request.path != EVENTS_PATH:
            return await handler(request)
        body = await request.read()
        ts = request.headers.get("X-Slack-Request-Timestamp", "").strip()
        sig = request.headers.get("X-Slack-Signature", "").strip()
        if verifier is None:
            return web.json_response(
                {"error": "events come by Socket Mode; set SLACK_SIGNING_SECRET for HTTP"}, status=401
            )
        if not ts.isdigit() or not sig or not verifier.is_valid(body, ts, sig):
            log.warning(
                "slack.rejected_request", reason="signature", has_timestamp=bool(ts), has_signature=bool(sig)
            )
            return web.json_response({"error": "invalid or missing Slack request signature"}, status=401)
        try:
            if request.content_type == "application/json":
                json.loads(body)
            else:
                body.decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            log.warning("slack.rejected_request", reason="malformed body", bytes=len(body))
            return web.json_response({"error": "body is not valid JSON or form data"}, status=400)
        return await handler(request)

    return guard


async def run_slack(assistant: ChannelAssistant, settings: ChannelSettings) -> None:
    """Run the Slack channel until cancelled (started by `confidante run` beside the others).

    A setup problem is logged with what to fix and the function returns, so the other channels
    keep running.
    """
    try:
        bot = SlackBot(assistant, settings)
        await bot.start()
    except SlackSetupError as err:
        log.error("slack.not_started", reason=str(err))
        return
    except OSError as err:  # the HTTP port is taken, or Slack cannot be reached
        log.error(
            "slack.not_started",
            reason=str(err),
            fix="free CONFIDANTE_SLACK_HTTP_PORT or pick another; check the network to Slack",
        )
        return
    try:
        await asyncio.Event().wait()
    finally:
        await bot.stop()
