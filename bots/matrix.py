"""Confidante on a Matrix homeserver (matrix-nio, async, end-to-end encryption included).

The bot joins when an allowed user invites it, answers every message in a direct chat (a room
with the bot and one person) and, in groups, only messages that address it. It keeps its login,
crypto store, sync token and recently handled event ids in `<data_dir>/matrix/`, so a restart is
the same device, does not answer old messages again, and answers once what arrived meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import structlog
from nio import (
    AsyncClient,
    AsyncClientConfig,
    InviteMemberEvent,
    JoinError,
    LoginResponse,
    MatrixRoom,
    MegolmEvent,
    ReactionEvent,
    RedactionEvent,
    RoomGetEventResponse,
    RoomMemberEvent,
    RoomMessageEmote,
    RoomMessageText,
    SyncError,
    SyncResponse,
    UploadResponse,
    WhoamiResponse,
)
from nio.events.misc import BadEvent, UnknownBadEvent
from nio.exceptions import EncryptionError, LocalProtocolError

from bots import matrix_media
from bots.channel import ChannelAssistant, ChatLocks, RecentIds, answer, drain, keep_alive, with_admin_flag
from bots.matrix_addressing import (
    inviter_allowed,
    is_command,
    mentions_bot,
    relation,
    replied_to,
    strip_leading_mention,
    strip_reply_fallback,
    thread_root,
)
from bots.matrix_send import (
    NETWORK_ERRORS,
    MatrixSendError,
    Outbox,
    backoff_delays,
    reaction_keys,
    send_first,
)
from bots.matrix_state import Credentials, MatrixState
from bots.settings import ChannelSettings
from core import recovery
from core.media.reader import MediaReader
from core.messages import Incoming, Reply
from core.reminders.dispatch import Channel as ReminderChannel
from core.reminders.dispatch import snooze_buttons

log = structlog.get_logger(__name__)

PLATFORM = "matrix"
INTRO = (
    "Hi, I'm {name}, a personal assistant that remembers what you tell me. "
    "In a group, mention me or reply to me; in a direct chat just write. "
    "Send /memory to see what I remember, /forget to drop something, /forget_me to erase everything."
)
TYPING_TIMEOUT_MS = 30_000  # clients drop the notice after this; it is renewed before


class _NoEventBodies(logging.Filter):
    """nio logs a failed validation with the whole event or response, message text included:
    only its first line (which property failed) is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Error validating"):
            first = message.splitlines()[0]
            record.msg = first if first.endswith("is a required property") else first.split(":")[0]
            record.args = None
        return True


_NO_EVENT_BODIES = _NoEventBodies()
for _name in ("nio.events.misc", "nio.responses"):
    logging.getLogger(_name).addFilter(_NO_EVENT_BODIES)


class MatrixConfigError(RuntimeError):
    """The settings cannot work; the message says what to set."""


def is_direct(room: MatrixRoom) -> bool:
    """The bot and at most one other (joined or invited) member."""
    return room.joined_count + room.invited_count <= 2


class MatrixBot:
    def __init__(self, assistant: ChannelAssistant, settings: ChannelSettings) -> None:
        if not settings.matrix.homeserver or not settings.matrix.user_id:
            raise MatrixConfigError(
                "Set CONFIDANTE_MATRIX_HOMESERVER (e.g. https://matrix.example.org) and "
                "CONFIDANTE_MATRIX_USER_ID (e.g. @confidante:example.org)."
            )
        self.assistant = assistant
        self.settings = settings
        self.user_id = settings.matrix.user_id
        self.state = MatrixState(settings.ensure_data_dir() / "matrix")
        self.client = AsyncClient(
            settings.matrix.homeserver.rstrip("/"),
            self.user_id,
            store_path=str(self.state.store_dir),
            config=AsyncClientConfig(
                # Errors surface to our own retry loops, which back off and honor retry_after_ms.
                max_limit_exceeded=0,
                max_timeouts=0,
                encryption_enabled=True,
                store_sync_tokens=False,
                request_timeout=max(30, settings.matrix.sync_timeout_ms / 1000 + 15),
            ),
        )
        self.outbox = Outbox(
            self.client,
            unverified=settings.matrix.unverified_devices,
            edit_interval=settings.matrix.edit_interval_seconds,
            backoff_max=settings.matrix.backoff_max_seconds,
        )
        self.display_name: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lock = ChatLocks()
        self._own_events = RecentIds(maxlen=2000)
        self._reactions_seen = RecentIds(maxlen=2000)
        self._invites_seen: set[str] = set()
        self._greet: set[str] = set()
        self._closed_rooms: set[str] = set()
        self._undecrypted: dict[str, tuple[str, MegolmEvent, float]] = {}
        self._skip_timeline = False
        self._sync_task: asyncio.Task[None] | None = None
        self._stopping = False
        self.media = MediaReader(settings) if settings.media_enabled else None
        self.synced = asyncio.Event()  # set after every successful sync (tests wait on it)
        self.sync_count = 0
        self.sync_failures = 0
        self.joins_rate_limited = 0  # joins the homeserver made wait (M_LIMIT_EXCEEDED)
        self.first_sync_seconds = 0.0

    # ---- login ---------------------------------------------------------------------------------

    async def _login(self) -> None:
        s = self.settings
        creds = self.state.load_credentials()
        if creds and creds.user_id == self.user_id and creds.homeserver == s.matrix.homeserver:
            self.client.restore_login(creds.user_id, creds.device_id, creds.access_token)
            who = await self._retry(self.client.whoami)
            if isinstance(who, WhoamiResponse):
                log.info("matrix.restored_login", user_id=self.user_id, device_id=creds.device_id)
                return
            log.warning("matrix.saved_token_rejected", error=str(who))
            self.client.access_token = ""
        if s.matrix.access_token and not (
            creds and creds.access_token == s.matrix.access_token.get_secret_value()
        ):
            token = s.matrix.access_token.get_secret_value()
            self.client.access_token = token
            who = await self._retry(self.client.whoami)
            if not isinstance(who, WhoamiResponse) or not who.device_id:
                raise MatrixConfigError(
                    f"CONFIDANTE_MATRIX_ACCESS_TOKEN was refused by {s.matrix.homeserver} ({who}); "
                    "create a new token or set CONFIDANTE_MATRIX_PASSWORD instead."
                )
            if who.user_id != self.user_id:
                raise MatrixConfigError(
                    f"The access token belongs to {who.user_id}, not CONFIDANTE_MATRIX_USER_ID={self.user_id}."
                )
            self.client.restore_login(who.user_id, who.device_id, token)
        elif s.matrix.password:
            if creds and creds.user_id == self.user_id:  # same device, so the crypto store keeps matching
                self.client.device_id = creds.device_id
            resp = await self._retry(
                lambda: self.client.login(
                    s.matrix.password.get_secret_value(), device_name=s.matrix.device_name
                )
            )
            if not isinstance(resp, LoginResponse):
                raise MatrixConfigError(
                    f"Logging in as {self.user_id} failed ({resp}); check CONFIDANTE_MATRIX_PASSWORD."
                )
        else:
            raise MatrixConfigError(
                "Set CONFIDANTE_MATRIX_ACCESS_TOKEN or CONFIDANTE_MATRIX_PASSWORD for the Matrix account."
            )
        self.state.save_credentials(
            Credentials(s.matrix.homeserver, self.user_id, self.client.device_id, self.client.access_token)
        )
        log.info("matrix.logged_in", user_id=self.user_id, device_id=self.client.device_id)

    def fingerprint(self) -> str | None:
        """The device's ed25519 key, for people who verify the bot's device by hand."""
        olm = self.client.olm
        return olm.account.identity_keys["ed25519"] if olm else None

    async def _retry(self, call: Any) -> Any:
        """Call until the homeserver answers at all (it may still be starting)."""
        delays = backoff_delays(cap=self.settings.matrix.backoff_max_seconds)
        while True:
            try:
                return await call()
            except NETWORK_ERRORS as exc:
                delay = delays()
                log.warning("matrix.unreachable", error=type(exc).__name__, retry_in=round(delay, 2))
                await asyncio.sleep(delay)

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Log in and finish one sync, then keep syncing in the background."""
        started = time.monotonic()
        try:
            await self._login()
        except BaseException:
            await self.client.close()
            raise
        self.listen()
        if self.client.should_upload_keys:
            await self._retry(self.client.keys_upload)
        profile = await self._retry(self.client.get_displayname)
        self.display_name = getattr(profile, "displayname", None) or self.user_id.split(":")[0].lstrip("@")
        first_token = self.state.next_batch
        leftover = dict(self.state.pending)  # accepted before the last stop, never answered
        # Without a saved token this is the first run: old timeline events are history, not questions.
        self._skip_timeline = first_token is None
        await self._sync_once(since=first_token, full_state=True, first=True)
        self._skip_timeline = False
        self.first_sync_seconds = time.monotonic() - started
        log.info(
            "matrix.ready",
            user_id=self.user_id,
            device_id=self.client.device_id,
            fingerprint=self.fingerprint(),
            rooms=len(self.client.rooms),
            seconds=round(self.first_sync_seconds, 2),
        )
        for event_id, room_id in leftover.items():
            self._spawn(self._resume_pending(room_id, event_id))
        self._sync_task = asyncio.create_task(self._sync_loop(), name="matrix-sync")
        reminders = getattr(self.assistant, "reminders", None)
        if reminders is not None:  # reminders set in Matrix rooms are sent from here
            send = functools.partial(send_first, self.outbox, self._reminder_room_gone)
            reminders.dispatcher.attach(PLATFORM, ReminderChannel(send))
        recovery.register(  # messages left unanswered while running: answered once the sync is back
            self.assistant, PLATFORM, lambda m: self._spawn(self._resume_pending(m.chat_id, m.message_id))
        )

    async def _reminder_room_gone(self, room_id: str) -> None:
        await self.assistant.chat_closed(PLATFORM, room_id)

    def listen(self) -> None:
        """Hand synced events to the handlers below."""
        self.client.add_event_callback(self._on_invite, InviteMemberEvent)
        self.client.add_event_callback(self._on_message, (RoomMessageText, RoomMessageEmote))
        if self.media is not None:
            self.client.add_event_callback(self._on_media, matrix_media.MEDIA_EVENTS)
        self.client.add_event_callback(self._on_undecrypted, MegolmEvent)
        self.client.add_event_callback(self._on_redaction, RedactionEvent)
        self.client.add_event_callback(self._on_reaction, ReactionEvent)
        self.client.add_event_callback(self._on_member, RoomMemberEvent)
        self.client.add_event_callback(self._on_bad_event, (BadEvent, UnknownBadEvent))

    async def stop(self, grace: float | None = None) -> None:
        """Sync no more; give replies in progress `grace` seconds (the shutdown grace period),
        then cut the rest: they stay pending and are answered at the next start."""
        self._stopping = True
        reminders = getattr(self.assistant, "reminders", None)
        if reminders is not None:
            await reminders.dispatcher.detach(PLATFORM)
        recovery.unregister(self.assistant, PLATFORM)
        if self._sync_task:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sync_task
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        busy = {t for t in self._tasks if not t.done()}
        if busy:
            log.info("matrix.finishing_replies", replies=len(busy), grace_s=grace)
            _, cut = await asyncio.wait(busy, timeout=grace)
            if cut:
                log.warning("matrix.replies_cut", replies=len(cut))
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.state.save()
        await self.client.close()

    async def run(self) -> None:
        """Run until cancelled."""
        await self.start()
        try:
            assert self._sync_task
            await self._sync_task
        finally:
            await self.stop()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- sync ----------------------------------------------------------------------------------

    def _filter(self, first: bool) -> dict[str, Any]:
        return {"room": {"timeline": {"limit": 1 if self._skip_timeline else 50}}}

    async def _sync_once(
        self, since: str | None = None, full_state: bool = False, first: bool = False
    ) -> None:
        delays = backoff_delays(cap=self.settings.matrix.backoff_max_seconds)
        while True:
            try:
                resp = await self.client.sync(
                    timeout=0 if first else self.settings.matrix.sync_timeout_ms,
                    sync_filter=self._filter(first),
                    since=since,
                    full_state=full_state or None,
                )
            except NETWORK_ERRORS as exc:
                self.sync_failures += 1
                delay = delays()
                log.warning("matrix.sync_failed", error=type(exc).__name__, retry_in=round(delay, 2))
                await asyncio.sleep(delay)
                continue
            if isinstance(resp, SyncError):
                if resp.status_code == "M_UNKNOWN_TOKEN":
                    raise MatrixConfigError(
                        f"The homeserver no longer accepts the bot's access token ({resp.message}); "
                        f"delete {self.state.dir / 'credentials.json'} and set CONFIDANTE_MATRIX_PASSWORD."
                    )
                delay = (resp.retry_after_ms or 0) / 1000 or delays()
                log.warning("matrix.sync_error", error=str(resp), retry_in=round(delay, 2))
                await asyncio.sleep(delay)
                continue
            break
        await self._after_sync(resp)

    async def _after_sync(self, resp: SyncResponse) -> None:
        # What sync_forever would do: key upkeep and queued to-device messages (key requests).
        with contextlib.suppress(*NETWORK_ERRORS):
            await self.client.send_to_device_messages()
            if self.client.should_upload_keys:
                await self.client.keys_upload()
            if self.client.should_query_keys:
                await self.client.keys_query()
            if self.client.should_claim_keys:
                await self.client.keys_claim(self.client.get_users_for_key_claiming())
        # nio does not look at rooms we left: a kick, ban or leave shows up only here.
        for room_id in resp.rooms.leave:
            self._room_left(room_id)
        # Every event of this sync is now handled or recorded as pending: the token may move on.
        self.state.set_token(resp.next_batch)
        self._retry_undecrypted()
        for room_id in list(self._greet):
            if room_id in self.client.rooms:
                self._greet.discard(room_id)
                self._spawn(self._send_intro(room_id))
        self.sync_count += 1
        self.synced.set()
        self.synced.clear()

    async def _sync_loop(self) -> None:
        delays = backoff_delays(cap=self.settings.matrix.backoff_max_seconds)
        while not self._stopping:
            failures = self.sync_failures
            try:
                await self._sync_once()
                if self.sync_failures != failures:  # reconnected: answer what the outage left
                    recovery.nudge(self.assistant)
            except MatrixConfigError:
                raise
            except Exception:
                # A bug or an odd response must not end the channel (and with it, in one process,
                # the other platforms): log it, wait, and sync again from the last saved point.
                delay = delays()
                log.exception("matrix.sync_crashed", retry_in=round(delay, 2))
                await asyncio.sleep(delay)

    # ---- events --------------------------------------------------------------------------------

    async def _on_invite(self, room: MatrixRoom, event: InviteMemberEvent) -> None:
        if (
            event.state_key != self.user_id
            or event.membership != "invite"
            or room.room_id in self._invites_seen
        ):
            return
        self._invites_seen.add(room.room_id)
        self._spawn(self._answer_invite(room.room_id, event.sender))

    async def _answer_invite(self, room_id: str, inviter: str) -> None:
        if not inviter_allowed(inviter, self.user_id, self.settings.matrix.allowed_inviters):
            log.info("matrix.invite_declined", room_id=room_id, inviter=inviter)
            with contextlib.suppress(*NETWORK_ERRORS):
                await self.client.room_leave(room_id)
            return
        resp = await self._join(room_id)
        if isinstance(resp, JoinError):
            log.warning("matrix.join_failed", room_id=room_id, error=str(resp))
            return
        log.info("matrix.joined", room_id=room_id, inviter=inviter)
        self._closed_rooms.discard(room_id)
        await self.assistant.chat_opened(PLATFORM, room_id)  # invited back after a kick
        self._greet.add(room_id)

    async def _join(self, room_id: str) -> Any:
        """Join, waiting out the homeserver's rate limit (M_LIMIT_EXCEEDED, e.g. several invites
        at once) as a send does: a refused join would leave the bot out of that room for good."""
        deadline = time.monotonic() + self.outbox.give_up_after
        while True:
            resp = await self._retry(lambda: self.client.join(room_id))
            if not (isinstance(resp, JoinError) and resp.status_code == "M_LIMIT_EXCEEDED"):
                return resp
            if time.monotonic() > deadline:
                return resp
            self.joins_rate_limited += 1
            wait = (resp.retry_after_ms or 1000) / 1000
            log.info("matrix.join_rate_limited", room_id=room_id, retry_after_s=wait)
            await asyncio.sleep(wait)

    async def _send_intro(self, room_id: str) -> None:
        try:
            ids = await self.outbox.send_text(room_id, INTRO.format(name=self.display_name or "Confidante"))
            self._remember_own(ids)
        except (MatrixSendError, LocalProtocolError) as exc:
            log.warning("matrix.intro_failed", room_id=room_id, error=str(exc))

    async def _on_message(self, room: MatrixRoom, event: RoomMessageText | RoomMessageEmote) -> None:
        if self._skip_timeline or event.sender == self.user_id or room.room_id in self._closed_rooms:
            return
        if self.state.seen(event.event_id):
            return
        self.state.accept(event.event_id, room.room_id)
        with contextlib.suppress(Exception):  # matrix's own pending list still has it
            self.assistant.accept(self._incoming(room, event)[0])
        self._spawn(self._handle(room.room_id, event))

    async def _on_bad_event(self, room: MatrixRoom, event: BadEvent | UnknownBadEvent) -> None:
        """An event nio could not read (a broken or forged event): say which field, nothing more."""
        source = event.source if isinstance(event.source, dict) else {}
        field = next((f for f in ("sender", "event_id", "type", "origin_server_ts") if f not in source), None)
        if field is None and source.get("type") == "m.room.message":
            field = next(
                (f"content.{f}" for f in ("msgtype", "body") if f not in source.get("content", {})), None
            )
        log.warning(
            "matrix.event_rejected",
            room_id=room.room_id,
            type=str(source.get("type", "")),
            missing=field or "a field in the wrong form",
        )

    async def _on_undecrypted(self, room: MatrixRoom, event: MegolmEvent) -> None:
        """A message we have no key for yet: ask the sender's devices, answer when it arrives."""
        if self._skip_timeline or event.sender == self.user_id or self.state.seen(event.event_id):
            return
        # Pending on disk too: if the key only arrives after a restart, the message is not lost.
        self.state.accept(event.event_id, room.room_id)
        await self._await_key(room.room_id, event)

    async def _await_key(self, room_id: str, event: MegolmEvent) -> None:
        self._undecrypted[event.event_id] = (room_id, event, time.monotonic())
        log.info("matrix.missing_room_key", room_id=room_id, session_id=event.session_id)
        try:
            await self.client.request_room_key(event)
        except LocalProtocolError:
            pass  # already asked for this session
        except NETWORK_ERRORS as exc:
            log.warning("matrix.key_request_failed", error=type(exc).__name__)

    def _retry_undecrypted(self) -> None:
        max_age = self.settings.matrix.catchup_max_age_seconds
        for event_id, (room_id, event, first_seen) in list(self._undecrypted.items()):
            try:
                decrypted = self.client.decrypt_event(event)
            except EncryptionError:
                if time.monotonic() - first_seen > max_age:
                    log.warning("matrix.room_key_never_came", room_id=room_id, session_id=event.session_id)
                    del self._undecrypted[event_id]
                    self.state.done(event_id)
                continue
            del self._undecrypted[event_id]
            if (
                isinstance(decrypted, (RoomMessageText, RoomMessageEmote))
                and room_id not in self._closed_rooms
            ):
                log.info("matrix.decrypted_late", room_id=room_id)
                self._spawn(self._handle(room_id, decrypted))
            else:
                self.state.done(event_id)

    async def _on_reaction(self, room: MatrixRoom, event: ReactionEvent) -> None:
        """A reaction on one of the bot's reminders is that reminder's button: 💤 snoozes it
        10 minutes, 🕐 an hour, 📅 until tomorrow, 🔕 stops follow-ups. It runs as the command
        the button stands for, from the person who reacted (so in a group only the one who
        set the reminder may snooze it). Other reactions are ignored."""
        if self._skip_timeline or event.sender == self.user_id or room.room_id in self._closed_rooms:
            return
        if not self._reactions_seen.add(event.event_id):  # delivered twice
            return
        reminders = getattr(self.assistant, "reminders", None)
        if (
            reminders is None
            or time.time() - event.server_timestamp / 1000 > self.settings.matrix.catchup_max_age_seconds
        ):
            return
        reminder = await asyncio.to_thread(reminders.store.by_message, event.reacts_to)
        if reminder is None or reminder.platform != PLATFORM or reminder.chat_id != room.room_id:
            return
        command = next(
            (b.command for emoji, b in reaction_keys(snooze_buttons(reminder)) if emoji == event.key), None
        )
        if command is None:
            return
        log.info("matrix.reminder_reaction", room_id=room.room_id)
        incoming = Incoming(
            platform=PLATFORM,
            chat_id=room.room_id,
            sender_id=event.sender,
            sender_name=room.user_name(event.sender) or event.sender,
            text=command,
            message_id=event.event_id,
            chat_kind="direct" if is_direct(room) else "group",
            addressed=True,
        )

        async def run() -> None:
            try:
                async with self._lock(room.room_id):
                    await self._answer_incoming(room.room_id, incoming, False)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("matrix.reaction_failed", room_id=room.room_id)

        self._spawn(run())

    async def _on_redaction(self, room: MatrixRoom, event: RedactionEvent) -> None:
        if self._skip_timeline or event.sender == self.user_id or self.state.seen(event.event_id):
            return
        self.state.accept(event.event_id, room.room_id)

        async def forget() -> None:
            try:
                await self.assistant.redact(PLATFORM, room.room_id, event.redacts)
                log.info("matrix.redacted", room_id=room.room_id)
            finally:
                self.state.done(event.event_id)

        self._spawn(forget())

    def _room_left(self, room_id: str) -> None:
        self._invites_seen.discard(room_id)
        if self.client.rooms.pop(room_id, None) is None or room_id in self._closed_rooms:
            return  # a declined invite, or already closed
        self._closed_rooms.add(room_id)
        log.info("matrix.removed_from_room", room_id=room_id)
        self._spawn(self.assistant.chat_closed(PLATFORM, room_id))

    async def _on_member(self, room: MatrixRoom, event: RoomMemberEvent) -> None:
        if self._skip_timeline:
            return
        if event.state_key == self.user_id and event.membership in ("leave", "ban"):
            self._room_left(room.room_id)
        elif (
            event.membership == "leave"
            and event.state_key != self.user_id
            and room.joined_count <= 1
            and room.room_id not in self._closed_rooms
        ):
            # Everyone else left: nobody to talk to, so leave instead of lingering in an empty room.
            self._closed_rooms.add(room.room_id)
            log.info("matrix.left_empty_room", room_id=room.room_id)
            with contextlib.suppress(*NETWORK_ERRORS):
                await self.client.room_leave(room.room_id)
            self._spawn(self.assistant.chat_closed(PLATFORM, room.room_id))

    async def _resume_pending(self, room_id: str, event_id: str) -> None:
        """An event accepted before a crash or stop but never answered."""
        resp = await self._retry(lambda: self.client.room_get_event(room_id, event_id))
        if not isinstance(resp, RoomGetEventResponse):
            self.state.done(event_id)
            return
        event = resp.event
        if isinstance(event, MegolmEvent):
            try:
                event = self.client.decrypt_event(event)
            except EncryptionError:
                await self._await_key(room_id, event)  # still no key: keep waiting for it
                return
        if isinstance(event, (RoomMessageText, RoomMessageEmote)):
            await self._handle(room_id, event)
        else:
            self.state.done(event_id)

    # ---- answering -----------------------------------------------------------------------------

    def _remember_own(self, ids: list[str]) -> None:
        for event_id in ids:
            self._own_events.add(event_id)

    async def _is_own(self, room_id: str, event_id: str) -> bool:
        if event_id in self._own_events:
            return True
        with contextlib.suppress(*NETWORK_ERRORS):
            resp = await self.client.room_get_event(room_id, event_id)
            if isinstance(resp, RoomGetEventResponse):
                own = resp.event.sender == self.user_id
                if own:
                    self._remember_own([event_id])
                return own
        return False

    async def _handle(self, room_id: str, event: RoomMessageText | RoomMessageEmote) -> None:
        try:
            async with self._lock(room_id):
                await self._answer(room_id, event)
        except asyncio.CancelledError:
            raise  # stays pending: answered at the next start
        except Exception:
            log.exception("matrix.handle_failed", room_id=room_id, event_id=event.event_id)
        self.state.done(event.event_id)

    def _incoming(self, room: MatrixRoom, event: RoomMessageText | RoomMessageEmote) -> tuple[Incoming, bool]:
        content = event.source.get("content", {})
        rel = relation(content)
        ts = datetime.fromtimestamp(event.server_timestamp / 1000, UTC)
        name = room.user_name(event.sender) or event.sender
        base = {
            "platform": PLATFORM,
            "chat_id": room.room_id,
            "sender_id": event.sender,
            "sender_name": name,
            "ts": ts,
        }
        direct = is_direct(room)
        kind = "direct" if direct else "group"
        if rel.get("rel_type") == "m.replace":
            new = content.get("m.new_content") or {}
            text = str(new.get("body", ""))
            original = str(rel.get("event_id", event.event_id))
            return Incoming(
                text=text, message_id=original, chat_kind=kind, edited=True, addressed=False, **base
            ), False
        reply_to = replied_to(content)
        body = strip_reply_fallback(event.body) if reply_to else event.body
        if isinstance(event, RoomMessageEmote):
            body = f"* {name} {body}"
        mentioned = mentions_bot(content, body, self.user_id, self.display_name)
        commands = [c for c, _ in self.assistant.command_list()]
        body = strip_leading_mention(body, self.user_id, self.display_name) if mentioned else body
        addressed = direct or mentioned or is_command(body, commands)
        age = time.time() - event.server_timestamp / 1000
        late = age > self.settings.matrix.catchup_max_age_seconds
        if late:
            log.info("matrix.too_old_to_answer", room_id=room.room_id, age_s=round(age))
        incoming = Incoming(
            text=body,
            message_id=event.event_id,
            chat_kind=kind,
            thread_id=thread_root(content),
            reply_to=reply_to,
            addressed=addressed and not late,
            **base,
        )
        return incoming, late

    async def _on_media(self, room: MatrixRoom, event: matrix_media.MediaEvent) -> None:
        """A voice message, audio file or image: read it (bytes in memory only), answer it like text."""
        if self._skip_timeline or event.sender == self.user_id or room.room_id in self._closed_rooms:
            return
        if self.state.seen(event.event_id):
            return
        self.state.accept(event.event_id, room.room_id)
        self._spawn(self._handle_media(room.room_id, event))

    async def _handle_media(self, room_id: str, event: matrix_media.MediaEvent) -> None:
        assert self.media is not None
        lock = self._lock(room_id)
        try:
            async with lock:
                room = self.client.rooms.get(room_id)
                if room is not None and room_id not in self._closed_rooms:
                    incoming, late = self._incoming(room, event)  # type: ignore[arg-type]
                    item = matrix_media.attachment(event)
                    with self.assistant.reading(incoming):
                        got = await matrix_media.intake(
                            self.client, replace(incoming, text=item.caption), item, self.media
                        )
                        relation_out = self._reply_relation(incoming)
                        if got.notice:
                            self._remember_own(await self.outbox.send_text(room_id, got.notice, relation_out))
                        if got.incoming is not None:
                            await self._answer_incoming(room_id, got.incoming, late)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("matrix.handle_failed", room_id=room_id, event_id=event.event_id)
        self.state.done(event.event_id)

    async def _answer(self, room_id: str, event: RoomMessageText | RoomMessageEmote) -> None:
        room = self.client.rooms.get(room_id)
        if room is None or room_id in self._closed_rooms:
            return
        incoming, late = self._incoming(room, event)
        await self._answer_incoming(room_id, incoming, late)

    async def _answer_incoming(self, room_id: str, incoming: Incoming, late: bool) -> None:
        room = self.client.rooms[room_id]
        replied = not incoming.edited and not incoming.addressed and not late and incoming.reply_to
        if replied and await self._is_own(room_id, incoming.reply_to):
            incoming = _replace(incoming, addressed=True)
        if not incoming.addressed:
            await self.assistant.handle(incoming)  # recorded only
            return
        if self.settings.log_content:
            log.debug("matrix.incoming", room_id=room_id, text=incoming.text)
        relation_out = self._reply_relation(incoming)
        incoming = await with_admin_flag(incoming, lambda: self._is_admin(room, incoming.sender_id))

        async def apologize(text: str) -> None:
            self._remember_own(await self.outbox.send_text(room_id, text, relation_out))

        async with keep_alive(
            lambda: self.client.room_typing(room_id, True, timeout=TYPING_TIMEOUT_MS),
            TYPING_TIMEOUT_MS / 1000 * 0.6,
            tolerate=NETWORK_ERRORS,
            on_stop=lambda: self.client.room_typing(room_id, False),
        ):
            await answer(
                self.assistant,
                incoming,
                lambda reply: self._deliver(room_id, reply, relation_out),
                apologize,
                platform=PLATFORM,
                room_id=room_id,
            )

    async def _is_admin(self, room: MatrixRoom, user_id: str) -> bool:
        """Whether the sender may change the room's state: a power level of at least what the
        room asks for state events (state_default, 50 unless the room says otherwise). From
        room version 12 on a room's creators outrank every level and are not listed in it."""
        levels = room.power_levels
        if user_id not in levels.users and user_id in await self._creators(room.room_id):
            return True
        return levels.get_user_level(user_id) >= levels.defaults.state_default

    async def _creators(self, room_id: str) -> set[str]:
        """Who created the room (the m.room.create event's sender and additional_creators)."""
        resp = await self.client.room_get_state(room_id)
        for event in getattr(resp, "events", []):
            if event.get("type") == "m.room.create" and event.get("state_key") == "":
                extra = event.get("content", {}).get("additional_creators") or []
                return {str(event.get("sender"))} | {str(u) for u in extra}
        return set()

    @staticmethod
    def _reply_relation(incoming: Incoming) -> dict[str, Any] | None:
        """In a thread: answer in it. In a group: reply to the message. In a DM: just answer."""
        if incoming.thread_id:
            return {
                "rel_type": "m.thread",
                "event_id": incoming.thread_id,
                "is_falling_back": True,
                "m.in_reply_to": {"event_id": incoming.message_id},
            }
        if incoming.chat_kind == "group":
            return {"m.in_reply_to": {"event_id": incoming.message_id}}
        return None

    async def _deliver(self, room_id: str, reply: Reply, relation_out: dict[str, Any] | None) -> None:
        earlier = reply.earlier[0] if reply.earlier else None
        if reply.stream is not None:
            try:
                _, ids = await self.outbox.stream(
                    room_id, reply.stream, relation_out, earlier=earlier, on_sent=reply.sent
                )
            except BaseException:
                await drain(reply)  # the assistant records its turn when the stream ends
                raise
        else:
            ids = (
                await self.outbox.send_text(
                    room_id, reply.text, relation_out, earlier=earlier, on_sent=reply.sent
                )
                if reply.text.strip()
                else []
            )
        self._remember_own(ids)
        if reply.buttons:
            options = "\n".join(f"- {b.label}: send `{b.command}`" for b in reply.buttons)
            self._remember_own(await self.outbox.send_text(room_id, f"Options:\n{options}", relation_out))
        if reply.document is not None:
            await self._send_document(room_id, reply, relation_out)

    async def _send_document(self, room_id: str, reply: Reply, relation_out: dict[str, Any] | None) -> None:
        doc = reply.document
        assert doc is not None
        room = self.client.rooms.get(room_id)
        encrypt = bool(room and room.encrypted)
        resp, keys = await self.client.upload(
            io.BytesIO(doc.content),
            content_type=doc.mime,
            filename=doc.filename,
            encrypt=encrypt,
            filesize=len(doc.content),
        )
        if not isinstance(resp, UploadResponse):
            log.warning("matrix.upload_failed", error=str(resp))
            await self.outbox.send_text(
                room_id, "I could not upload the file; please try again later.", relation_out
            )
            return
        content: dict[str, Any] = {
            "msgtype": "m.file",
            "body": doc.filename,
            "filename": doc.filename,
            "info": {"mimetype": doc.mime, "size": len(doc.content)},
        }
        if encrypt and keys:
            content["file"] = {**keys, "url": resp.content_uri}
        else:
            content["url"] = resp.content_uri
        if relation_out:
            content["m.relates_to"] = relation_out
        self._remember_own([await self.outbox.send(room_id, content)])


def _replace(incoming: Incoming, **changes: Any) -> Incoming:
    from dataclasses import replace

    return replace(incoming, **changes)


async def run_matrix(assistant: ChannelAssistant, settings: ChannelSettings) -> None:
    """Run the Matrix channel until cancelled (what `confidante run` starts beside the others)."""
    await MatrixBot(assistant, settings).run()
