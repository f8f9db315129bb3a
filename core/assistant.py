"""The pipeline one message goes through (docs/architecture.md): identity, dedupe, command, record,
recall, prompt, generate, reply, defer.

One person's messages are handled in order (a lock per person, held until their reply has
streamed out); different people run concurrently. Everything slow and blocking (LanceDB,
embeddings) runs in threads so one person's recall never stalls another's stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections import OrderedDict, defaultdict, deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from core import metrics
from core.access import Access
from core.commands import Commands, is_command
from core.config import Settings
from core.forgetting import Forgetting
from core.grounding import Grounding, SlipGuard, for_reply, reply_stream
from core.identity import Identities
from core.inbox import Entry, Inbox, Receipt, key_of
from core.jobs import Jobs, NoJobs
from core.llm.prompt import DEFAULT_LAYOUT, Layout, PromptParts, build_messages
from core.memory.embed import Embedder
from core.memory.recall import ChatContext, Recall, Recalled
from core.memory.records import Person, Turn, turn_id
from core.memory.store import Store, open_store
from core.memory.writer import TurnsNotWritten
from core.messages import Incoming, Reply
from core.reminders.parse import is_request as is_reminder_request
from core.reminders.service import Reminders, is_recall_question, open_reminders
from core.text import clean

log = structlog.get_logger(__name__)

RECENT_TURNS = 32
# A full window slides by half at once rather than by one turn a message: the prompt's start
# then stays the same for several messages, so the engine reuses its keys/values (prefill is
# most of the time to first token on a CPU).
RECENT_KEEP = 16
LATE_NOTE = "(Sorry this is late: I could not answer when your message came.)\n\n"
RECENT_CHATS = 20_000  # recent windows kept warm (up to RECENT_TURNS turns each)


class ChatEngine(Protocol):
    context_tokens: int

    def stream(self, messages: list[dict[str, str]], **kwargs: Any) -> AsyncIterator[str]: ...

    def count_tokens(self, text: str) -> int: ...


class Assistant:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        engine: ChatEngine,
        *,
        jobs: Jobs | None = None,
        layout: Layout = DEFAULT_LAYOUT,
        use_recall: bool = True,
        inbox: Inbox | None = None,
        reminders: Reminders | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.jobs = jobs or NoJobs()
        self.layout = layout
        self.use_recall = use_recall
        self.ground_replies = True  # questions about the person answered from recall (evals turn it off)
        self.inbox = inbox or Inbox()
        self.reminders = reminders or open_reminders(settings, in_memory=True)
        self.identities = Identities(store, global_failures=settings.link_failures_global)
        self.recall = Recall(store, engine.count_tokens)
        self.access = Access(settings)
        self.forgetting = Forgetting(store, self.jobs, self, self.reminders)
        self.commands = Commands(
            store=store,
            identities=self.identities,
            access=self.access,
            forgetting=self.forgetting,
            settings=settings,
            reminders=self.reminders,
        )
        from core.recovery import Recovery

        self.recovery = Recovery(self)  # answers what was left unanswered (core/recovery.py)
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._active: set[tuple[str, str, str]] = set()  # being answered now
        self._reading: set[tuple[str, str, str]] = set()  # attachments still being read
        self._recent: OrderedDict[tuple[str, str, str], deque[Turn]] = OrderedDict()

    # -- public API used by every channel ---------------------------------------------------

    def close(self) -> None:
        """The process is stopping: write the turns still staged (see Store.record_turns)."""
        self.store.close()
        self.inbox.close()
        self.reminders.close()

    def accept(self, msg: Incoming) -> None:
        """Record a message in the inbox before the channel acknowledges it to the platform."""
        if invalid_ids(msg) is None and not msg.edited:
            self.inbox.receive(msg)

    @contextlib.contextmanager
    def reading(self, msg: Incoming) -> Iterator[None]:
        """The channel is reading this message's attachment (download, speech, OCR: seconds on
        a busy machine) and will answer it then: until then the inbox's copy, which holds only
        the caption, must not be answered by the recovery loop as if nothing were answering it."""
        key = key_of(msg)
        self._reading.add(key)
        try:
            yield
        finally:
            self._reading.discard(key)

    def dismiss(self, msg: Incoming) -> None:
        """The channel answered this message itself (a refusal): nothing is left to answer."""
        self.inbox.answered(key_of(msg))

    async def unanswered(self, platform: str) -> list[Incoming]:
        """What an earlier run received on `platform` and never answered, oldest first, for the
        channel to answer now (each is answered once, with a note that it is late). Those older
        than the late-reply window are only recorded here: an answer hours later helps nobody."""
        entries = await asyncio.to_thread(self.inbox.unanswered, platform)
        young: list[Incoming] = []
        for entry in entries:
            assert entry.message is not None
            if self._too_old(entry):
                await self.handle(entry.message)  # recorded, not answered
            else:
                young.append(entry.message)
        if entries:
            log.info(
                "unanswered messages from before the restart",
                platform=platform,
                answering=len(young),
                too_old=len(entries) - len(young),
            )
        return young

    def _too_old(self, entry: Entry) -> bool:
        sent = entry.message.ts.timestamp() if entry.message is not None else entry.received_at
        return time.time() - min(sent, entry.received_at) > self.settings.late_reply_window_seconds

    def command_list(self) -> list[tuple[str, str]]:
        return self.commands.menu()

    async def handle(self, msg: Incoming) -> Reply | None:
        """Answer one message, or return None when there is nothing to say.

        Counts the outcome and times the reply; a request id goes into every log line about this
        message, including the worker task it leads to (structlog context variables)."""
        request_id = uuid.uuid4().hex[:16]
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                reply = await self._handle(msg)
            except BaseException:
                metrics.message(msg.platform, "failed")
                raise
        if reply is None:
            metrics.message(msg.platform, "ignored")
        elif reply.stream is None:
            metrics.message(msg.platform, "answered")
        else:
            reply.stream = _observed(reply.stream, msg.platform, request_id, started)
        return reply

    async def _handle(self, msg: Incoming) -> Reply | None:
        problem = invalid_ids(msg)
        if problem is not None:
            log.warning("message with unusable ids dropped", platform=msg.platform, problem=problem)
            return None
        text = clean(msg.text)
        if msg.edited:
            await self._edit(msg, text)
            return None
        key = key_of(msg)
        if key in self._active:  # a platform's redelivery while we are still answering it
            log.info("duplicate message ignored", platform=msg.platform)
            return None
        self._active.add(key)  # before the first await: a second delivery sees it at once
        try:
            go = await asyncio.to_thread(self.recovery.admit, msg, frozenset(self._active))
        except BaseException:
            self._active.discard(key)
            raise
        if go is None:
            self._active.discard(key)
            return None
        entry, late = go
        if late and self._too_old(entry):
            msg = replace(msg, addressed=False)
        try:
            reply = await self._answer(msg, text, late)
        except BaseException:
            self._active.discard(key)
            raise
        if reply is None:
            self._active.discard(key)
            await asyncio.to_thread(self.inbox.answered, key)
            return None
        await asyncio.to_thread(self.inbox.replying, key)
        reply.earlier = entry.reply_ids
        release = functools.partial(self._active.discard, key)
        reply.receipt = Receipt(self.inbox, key, done=release, released=release)
        if late and msg.addressed:
            if reply.stream is not None:
                reply.stream = _prefixed(LATE_NOTE, reply.stream)
            elif reply.text:
                reply.text = LATE_NOTE + reply.text
        return reply

    async def _answer(self, msg: Incoming, text: str, late: bool) -> Reply | None:
        chat = ChatContext(msg.platform, msg.chat_id, msg.chat_kind)
        if msg.chat_kind == "group" and not self.store.chat(msg.platform, msg.chat_id).active:
            return None
        refusal = self.access.gate(msg)  # before the sender becomes a person: strangers leave no trace
        if refusal is not None:
            return refusal if refusal.text else None
        if msg.chat_kind == "group":
            self.identities.burn_codes_in(text)  # a link code shown to a group is no longer secret
        person = await asyncio.to_thread(
            self.identities.resolve, msg.platform, msg.sender_id, msg.sender_name
        )
        refusal = self.access.throttle(msg, person)
        if refusal is not None:
            return refusal if refusal.text else None
        lock = self._locks[person.person_id]
        await lock.acquire()
        try:
            reply = await self._handle_locked(msg, text, person, chat, late)
        except TurnsNotWritten as exc:  # e.g. a full disk: the person hears what to do
            lock.release()
            log.error("memory store not writable", person=person.person_id)
            return Reply(text=str(exc))
        except BaseException:
            lock.release()
            raise
        if reply is None or reply.stream is None:
            lock.release()
            return reply
        reply.stream = self._release_after(reply.stream, lock)
        return reply

    async def redact(self, platform: str, chat_id: str, message_id: str) -> None:
        """Forget one message (the person deleted it) and everything consolidated from it."""
        await asyncio.to_thread(self.forgetting.forget_message, platform, chat_id, message_id)

    async def chat_closed(self, platform: str, chat_id: str) -> None:
        await self._set_active(platform, chat_id, False)
        log.info("chat closed, no longer answering there", platform=platform)

    async def chat_opened(self, platform: str, chat_id: str) -> None:
        """The bot was invited back: answer there again."""
        await self._set_active(platform, chat_id, True)

    async def _set_active(self, platform: str, chat_id: str, active: bool) -> None:
        chat = self.store.chat(platform, chat_id)
        if chat.active != active:
            chat.active = active
            await asyncio.to_thread(self.store.save_chat, platform, chat_id, chat)

    # -- the pipeline ---------------------------------------------------------------------------

    async def _handle_locked(
        self, msg: Incoming, text: str, person: Person, chat: ChatContext, late: bool = False
    ) -> Reply | None:
        self._log_content("message in", person, text)
        if is_command(text) and (msg.addressed or msg.chat_kind == "direct"):
            return await self.commands.run(msg, text, person, chat)
        if msg.addressed and is_reminder_request(text):  # reminders are not memories: no turn kept
            return await self.commands.run(msg, f"/remind {text}", person, chat)
        if msg.addressed and is_recall_question(text):
            answer = await self.reminders.recall(person.person_id, msg.platform, msg.chat_id, msg.chat_kind)
            return Reply(text=answer)
        if not text.strip():
            if not msg.addressed:
                return None
            return Reply(text="I got an empty message. Send me some text and I'll answer.")
        record = not person.settings.paused and (
            chat.kind == "direct" or self.store.chat(msg.platform, msg.chat_id).record_context
        )
        limit = self.settings.message_limit(msg.platform)
        vector = None
        if msg.addressed and len(text) <= limit:
            # the query's embedding and the chat's recent window (read on a cold cache) side by side
            [vector], ts = await asyncio.gather(
                asyncio.to_thread(self.store.embed, [text]),
                asyncio.to_thread(self._next_ts, person, chat, msg.ts),
            )
        else:
            ts = await asyncio.to_thread(self._next_ts, person, chat, msg.ts)
        turn = Turn(
            person_id=person.person_id,
            platform=msg.platform,
            chat_id=msg.chat_id,
            thread_id=msg.thread_id or "",
            message_id=msg.message_id,
            role="user",
            text=text,
            ts=ts,
            visibility=chat.scope,
            vector=vector,
        )
        if record:
            # durable when this returns (the journal); LanceDB gets it within a second, in one
            # commit with the reply's turn
            inserted = await asyncio.to_thread(self.store.record_turns, [turn])
            if inserted == 0 and not late:  # late: stored by the run that crashed, not answered
                log.info("duplicate message ignored", platform=msg.platform)
                return None
        if not msg.addressed:
            if record:
                self._remember(person, chat, turn)
            return None
        if late:  # the run that crashed may have finished the reply, only not shown it
            answered = await asyncio.to_thread(
                self.store.turns_by_ids, [turn_id(msg.platform, msg.chat_id, msg.message_id, "assistant")]
            )
            if answered:
                if record:
                    self._remember(person, chat, turn)
                return Reply(text=answered[0].text, thread_id=msg.thread_id, reply_to=msg.message_id)
        if len(text) > limit:
            if record:
                self._remember(person, chat, turn)
            return Reply(
                text=(
                    f"That message is {len(text):,} characters; I can read up to "
                    f"{limit:,} at once. "
                    + ("I kept all of it. " if record else "")
                    + "Send me the part you want me to look at, or ask about it in smaller pieces."
                )
            )
        recent = [t for t in await asyncio.to_thread(self._recent_list, person, chat) if t.id != turn.id]
        recalled = []
        if self.use_recall:
            recalled = await asyncio.to_thread(
                self._recall, person, chat, turn.vector, {t.id for t in recent} | {turn.id}, text
            )
        messages = self.prompt_for(person, chat, text, recalled, recent)
        grounding, guard = await asyncio.to_thread(
            self._grounding, person, msg, text, recalled, recent, turn.vector
        )
        if record:
            self._remember(person, chat, turn)
        return Reply(
            stream=self._generate(msg, person, chat, messages, record, grounding, guard),
            thread_id=msg.thread_id,
            reply_to=msg.message_id,
        )

    def _recall(
        self, person: Person, chat: ChatContext, vector: list[float], exclude_ids: set[str], text: str
    ) -> list[Recalled]:
        # Searches read LanceDB only: what the person said elsewhere a moment ago (still staged)
        # must be findable. This chat's staged turns are in the recent window, excluded anyway.
        started = time.perf_counter()
        self.store.settle_turns_of(person.person_id, besides=exclude_ids)
        found = self.recall.recall(person, chat, vector, exclude_ids=exclude_ids, query_text=text)
        metrics.stage("recall", time.perf_counter() - started)
        return found

    def _grounding(
        self,
        person: Person,
        msg: Incoming,
        text: str,
        recalled: list[Recalled],
        recent: list[Turn],
        vector: list[float] | None,
    ) -> tuple[Grounding | None, SlipGuard]:
        """A question about the person answered from what they told (core/grounding.py), and
        the guard that keeps their name and facts theirs in the reply."""
        return for_reply(
            text,
            person.display_name or msg.sender_name or "",
            recalled,
            [t.text for t in recent if t.role == "user" and t.person_id == person.person_id],
            self.store.embed,
            question_vector=vector,
            profile=person.profile,
            # in a group the answer would be posted where everybody reads it (and enters their
            # prompts): there the model answers from what the group may see, as before
            grounded=self.use_recall and self.ground_replies and msg.chat_kind == "direct",
        )

    def prompt_for(
        self,
        person: Person,
        chat: ChatContext,
        text: str,
        recalled: list[Recalled],
        recent: list[Turn],
    ) -> list[dict[str, str]]:
        started = time.perf_counter()
        budget = self.engine.context_tokens - self.settings.max_new_tokens - 16
        profile = (
            person.profile if chat.kind == "direct" or chat.scope in person.settings.shared_chats else ""
        )
        parts = PromptParts(
            persona=self.settings.persona,
            message=text,
            profile=profile,
            recalled=recalled,
            recent=recent,
            group=chat.kind == "group",
        )
        messages = build_messages(
            parts, layout=self.layout, budget_tokens=budget, count_tokens=self.engine.count_tokens
        )
        metrics.stage("prompt", time.perf_counter() - started)
        return messages

    async def _generate(
        self,
        msg: Incoming,
        person: Person,
        chat: ChatContext,
        messages: list[dict[str, str]],
        record: bool,
        grounding: Grounding | None = None,
        guard: SlipGuard | None = None,
    ) -> AsyncIterator[str]:
        parts: list[str] = []
        room = self.settings.reply_limit(msg.platform)
        try:
            # a private adapter holds private facts: never in a group
            adapter = person.person_id if chat.kind == "direct" else None
            stream = reply_stream(self.engine, messages, grounding=grounding, guard=guard, adapter=adapter)
            async for delta in stream:
                if len(delta) >= room:  # the platform's reply limit: cut here, stop generating
                    parts.append(delta[:room])
                    yield delta[:room]
                    log.info("reply cut at the platform limit", platform=msg.platform)
                    break
                room -= len(delta)
                parts.append(delta)
                yield delta
        except Exception as exc:  # the person must hear that something went wrong
            log.error("generation failed", error=str(exc), person=person.person_id)
            note = getattr(exc, "user_message", None) or (
                "Sorry, I couldn't finish that reply (the model failed). Your message is saved; try again."
            )
            parts.append(("\n\n" if parts else "") + note)
            yield parts[-1]
        text = "".join(parts).strip()
        self._log_content("reply out", person, text)
        if record and text:
            reply = Turn(
                person_id=person.person_id,
                platform=msg.platform,
                chat_id=msg.chat_id,
                thread_id=msg.thread_id or "",
                message_id=msg.message_id,
                role="assistant",
                text=text,
                visibility=chat.scope,
            )
            self._remember(person, chat, reply)
            # embedded and written in the background; consolidation hears of the turn once a
            # worker can read it
            await asyncio.to_thread(
                self.store.record_turns,
                [reply],
                check=False,
                then=functools.partial(self.jobs.after_turn, person.person_id),
            )
            if self.recovery.shared:  # the next message may be answered by another process
                try:
                    await asyncio.to_thread(self.store.settle)
                except Exception as exc:  # journaled: it reaches LanceDB when writes work again
                    log.warning("turns not written before the answer", error=type(exc).__name__)

    @staticmethod
    async def _release_after(stream: AsyncIterator[str], lock: asyncio.Lock) -> AsyncIterator[str]:
        try:
            async for delta in stream:
                yield delta
        finally:
            lock.release()

    # -- caches and helpers -----------------------------------------------------------------

    def forget_recent(self, platform: str | None = None, chat_id: str | None = None) -> None:
        """Drop cached recent windows (all, or one chat's): another process may have written
        there; they are read again from the store when next needed."""
        for key in list(self._recent):
            if platform is None or key[1:] == (platform, chat_id):
                self._recent.pop(key, None)

    def _recent_key(self, person: Person, chat: ChatContext) -> tuple[str, str, str]:
        owner = person.person_id if chat.kind == "direct" else ""
        return (owner, chat.platform, chat.chat_id)

    def _recent_for(self, person: Person, chat: ChatContext) -> deque[Turn]:
        """The chat's last turns, kept in memory for the RECENT_CHATS chats used last."""
        key = self._recent_key(person, chat)
        if key in self._recent:
            self._recent.move_to_end(key)
        else:
            if chat.kind == "direct":
                turns = self.store.recent_turns(
                    person.person_id, chat.platform, chat.chat_id, limit=RECENT_TURNS
                )
            else:
                turns = self.store.chat_turns(
                    chat.platform, chat.chat_id, scope=chat.scope, limit=RECENT_TURNS
                )
            self._recent[key] = deque(turns)
            while len(self._recent) > RECENT_CHATS:
                self._recent.popitem(last=False)
        return self._recent[key]

    def _next_ts(self, person: Person, chat: ChatContext, ts: datetime) -> datetime:
        """The platform's time, but never before what this chat already holds: platform clocks
        count whole seconds, our replies microseconds, and the stored order is the conversation."""
        last = max((t.ts for t in self._recent_for(person, chat)), default=None)
        return ts if last is None or ts > last else last + timedelta(microseconds=1)

    def _remember(self, person: Person, chat: ChatContext, turn: Turn) -> None:
        """Add a turn to the chat's recent window once (a window loaded after the turn was
        stored already holds it)."""
        recent = self._recent_for(person, chat)
        if all(t.id != turn.id for t in recent):
            recent.append(turn)
            if len(recent) > RECENT_TURNS:
                for _ in range(len(recent) - RECENT_KEEP):
                    recent.popleft()

    def _drop_prompt_prefixes(self) -> None:
        """The engine keeps keys/values of recent prompts; forgotten text must not stay there."""
        drop = getattr(self.engine, "forget_prefixes", None)
        if drop is not None:
            drop()

    def _recent_list(self, person: Person, chat: ChatContext) -> list[Turn]:
        return list(self._recent_for(person, chat))

    def drop_caches(self, person_id: str | None = None) -> None:
        """Forget cached turns after a deletion, so nothing forgotten reaches a prompt."""
        if person_id is None:
            self._recent.clear()
            self._drop_prompt_prefixes()
            return
        for key in list(self._recent):
            self._recent[key] = deque(t for t in self._recent[key] if t.person_id != person_id)
        self._drop_prompt_prefixes()

    def drop_turns(self, turn_ids: set[str]) -> None:
        """Deleted turns leave the recent windows and the prompt prefixes (core/forgetting.py)."""
        for key in list(self._recent):
            self._recent[key] = deque(t for t in self._recent[key] if t.id not in turn_ids)
        self._drop_prompt_prefixes()

    async def _edit(self, msg: Incoming, text: str) -> None:
        owner = self.store.person_for(msg.platform, msg.sender_id)
        stored = await asyncio.to_thread(
            self.store.turns_by_message, msg.platform, msg.chat_id, msg.message_id
        )
        if owner is None or not any(t.role == "user" and t.person_id == owner for t in stored):
            log.info("edit of a message the sender did not write ignored", platform=msg.platform)
            return
        changed = await asyncio.to_thread(
            self.store.edit_turn, msg.platform, msg.chat_id, msg.message_id, text
        )
        if changed:
            # People edit to take something back: the old text must leave the disk as well.
            await asyncio.to_thread(self.store.purge_history)
            self._drop_prompt_prefixes()
            for turns in self._recent.values():
                for turn in turns:
                    if (turn.platform, turn.chat_id, turn.message_id, turn.role) == (
                        msg.platform,
                        msg.chat_id,
                        msg.message_id,
                        "user",
                    ):
                        turn.text = text

    def _log_content(self, event: str, person: Person, text: str) -> None:
        if self.settings.log_content:
            log.debug(event, person=person.person_id, text=text)


async def _prefixed(prefix: str, stream: AsyncIterator[str]) -> AsyncIterator[str]:
    """The stream with `prefix` before its first text (an empty reply stays empty)."""
    async for delta in stream:
        if prefix and delta:
            delta, prefix = prefix + delta, ""
        yield delta


async def _observed(
    stream: AsyncIterator[str], platform: str, request_id: str, started: float
) -> AsyncIterator[str]:
    """The reply stream, timed (first text, whole reply) and counted; the channel consumes it
    outside `handle`, so the request id is bound again while it runs."""
    structlog.contextvars.bind_contextvars(request_id=request_id)
    first = True
    outcome = "failed"
    try:
        async for delta in stream:
            if first:
                metrics.stage("first_token", time.perf_counter() - started)
                first = False
            yield delta
        metrics.stage("reply", time.perf_counter() - started)
        outcome = "replied"
    finally:
        metrics.message(platform, outcome)
        structlog.contextvars.unbind_contextvars("request_id")


MAX_ID_CHARS = 512


def invalid_ids(msg: Incoming) -> str | None:
    """Why this message's ids cannot be stored or filtered on safely, or None when they can.

    Ids reach LanceDB filters (quoted) and become person ids; an empty id, a NUL, a lone
    surrogate or a megabyte-long id is a broken or hostile channel, never a real platform id.
    """
    fields = {
        "platform": msg.platform,
        "chat_id": msg.chat_id,
        "sender_id": msg.sender_id,
        "message_id": msg.message_id,
        "thread_id": msg.thread_id or "-",  # no thread (None or "") is fine
    }
    for name, value in fields.items():
        if not isinstance(value, str) or not value:
            return f"{name} is empty or not text"
        if len(value) > MAX_ID_CHARS:
            return f"{name} is longer than {MAX_ID_CHARS} characters"
        if "\x00" in value:
            return f"{name} contains NUL"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{name} is not valid Unicode"
    return None


def build_assistant(
    settings: Settings,
    *,
    engine: ChatEngine | None = None,
    jobs: Jobs | None = None,
    embedder: Embedder | None = None,
) -> Assistant:
    """The default composition: the chat process's store (with its journal), the configured
    model (or the serving engine at CONFIDANTE_GENERATION_URL), given jobs. `embedder` and
    `engine` default to the bundled ones; tests hand in their own instead of patching modules."""
    store = open_store(settings, embedder=embedder, journal=True)
    if engine is None and settings.remote_generation:
        from core.llm.remote import RemoteEngine

        engine = RemoteEngine(settings)  # no local model: the server generates
    if engine is None:
        from core.llm.engine import Engine
        from core.llm.model import load_model

        engine = Engine(load_model(settings), settings)
    return Assistant(
        settings,
        store,
        engine,
        jobs=jobs,
        inbox=Inbox(settings.data_dir / "inbox.sqlite3"),
        reminders=open_reminders(settings),
    )
