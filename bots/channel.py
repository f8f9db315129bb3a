"""What every channel shares, so each platform module keeps only its own wire format.

The contract a channel needs from the core (`ChannelAssistant`), the per-chat lock, dedupe of
redelivered events (on top of the core's own), the typing keep-alive, the rate-limited edit loop
that shows a streamed reply, draining a reply nobody can see, the apology on failure, splitting
long text, the group-admin question for `/context`, and the registry `confidante run` reads.
Nothing here knows a platform: Telegram, Slack and Matrix pass their own limits and length
function (Telegram counts UTF-16 code units, Matrix the bytes of an edit event).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import structlog

from bots.settings import ChannelSettings
from core import chat_admin
from core.messages import Incoming, Reply

log = structlog.get_logger(__name__)

LengthFn = Callable[[str], int]

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_SENTENCE_END = re.compile(r"[.!?…。！？](?=[\s\"'”’)\]]*\s)")


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units: how Telegram measures message limits and entity offsets."""
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True)
class _Line:
    start: int  # offset of the first character
    end: int  # offset just past the line's newline (or the text's end)
    fence: bool  # the line opens or closes a fenced code block
    opener_before: str | None  # the open fence's opening line before this line, None outside code


def _scan_lines(text: str) -> list[_Line]:
    """Walk the text's lines once, remembering which lie inside a fenced code block."""
    lines: list[_Line] = []
    opener: str | None = None
    marker = ""
    pos = 0
    for raw in text.splitlines(keepends=True):
        body = raw.rstrip("\r\n")
        m = _FENCE.match(body)
        is_fence = False
        before = opener
        if m:
            if opener is None:
                # backtick fences cannot carry backticks in their info string (CommonMark)
                if not (m.group(1)[0] == "`" and "`" in m.group(2)):
                    opener, marker, is_fence = body.strip(), m.group(1), True
            elif m.group(1)[0] == marker[0] and len(m.group(1)) >= len(marker) and not m.group(2).strip():
                opener, marker, is_fence = None, "", True
        lines.append(_Line(pos, pos + len(raw), is_fence, before))
        pos += len(raw)
    return lines


def _fit(text: str, budget: int, length: LengthFn) -> int:
    """The longest prefix of `text` whose length is within `budget` (binary search)."""
    if length(text) <= budget:
        return len(text)
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if length(text[:mid]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _closer(opener: str) -> str:
    m = _FENCE.match(opener)
    return m.group(1) if m else "```"


def _inline_code_open(line_prefix: str) -> bool:
    """An odd number of backticks before the cut on its line: we would split an inline code span."""
    return line_prefix.count("`") % 2 == 1


def _choose_cut(rest: str, hard: int, lines: list[_Line], min_cut: int) -> tuple[int, str | None]:
    """Pick where to end this chunk: paragraph, then line, then sentence, then word boundary.

    Returns (cut offset, opener of a code block left open at the cut or None).
    """

    def line_at(pos: int) -> _Line:
        for ln in lines:
            if ln.start <= pos < ln.end:
                return ln
        return lines[-1]

    def state(cut: int) -> tuple[bool, str | None]:
        """(valid cut, open fence opener at the cut)."""
        ln = line_at(cut)
        if cut == ln.start:
            return True, ln.opener_before
        if ln.fence:
            return False, None  # never inside a fence line's markup
        if ln.opener_before is None and _inline_code_open(rest[ln.start : cut]):
            return False, None
        return True, ln.opener_before

    window = rest[:hard]
    candidates: list[list[int]] = [[], [], [], []]  # paragraph, line, sentence, word
    for m in re.finditer(r"\n[ \t]*\n", window):
        candidates[0].append(m.end())
    for m in re.finditer(r"\n", window):
        candidates[1].append(m.end())
    for m in _SENTENCE_END.finditer(rest[: hard + 1]):
        if m.end() < hard:
            candidates[2].append(m.end())
    for m in re.finditer(r"\s+", rest[: hard + 1]):
        if 0 < m.start() <= hard:
            candidates[3].append(m.start())

    # First choice: a boundary outside any code block, late enough not to leave a tiny chunk.
    for kind in candidates[:3]:
        for cut in reversed(kind):
            if cut < min_cut:
                break
            ok, opener = state(cut)
            if ok and opener is None:
                return cut, None
    # Then a line boundary inside a long code block (closed here, reopened in the next chunk).
    for cut in reversed(candidates[1]):
        if cut < min_cut:
            break
        ok, opener = state(cut)
        if ok:
            return cut, opener
    # Then any word boundary, wherever it is.
    for cut in reversed(candidates[3]):
        ok, opener = state(cut)
        if ok and cut > 0:
            return cut, opener
    # A single "word" longer than the limit (a huge URL): cut it, there is nothing better.
    _, opener = state(hard)
    return hard, opener


def split_text(text: str, limit: int, *, length: LengthFn = len, exact: bool = False) -> list[str]:
    """Split `text` into chunks no longer than `limit` by `length`.

    Cuts at paragraph, then line, then sentence, then word boundaries, never inside a fenced
    code block's markup: when a code block itself is longer than the limit it is closed at
    the end of one chunk and reopened (same info string) at the start of the next, so each
    chunk renders on its own. Whitespace at a cut is dropped; nothing else is.

    `exact`: the chunks join back to `text` exactly (whitespace kept, no code block closed and
    reopened), for a channel that streams by offsets into the text (Matrix).
    """
    if limit < 16:
        raise ValueError(f"split_text needs a limit of at least 16, got {limit}")
    chunks: list[str] = []
    rest = text
    while rest:
        if length(rest) <= limit:
            chunks.append(rest)
            break
        lines = _scan_lines(rest)
        longest = max((len(_closer(ln.opener_before)) for ln in lines if ln.opener_before), default=3)
        reserve = 1 + longest if any(ln.fence for ln in lines) and not exact else 0
        hard = _fit(rest, limit - reserve, length)
        cut, opener = _choose_cut(rest, hard, lines, min_cut=max(1, hard * 3 // 10))
        head, tail = rest[:cut], rest[cut:]
        if exact:
            cut = max(cut, 1)
            head, tail = rest[:cut], rest[cut:]
            chunks.append(head)
            rest = tail
            continue
        if opener is not None:
            head = head.rstrip("\n") + "\n" + _closer(opener)
            reopen = opener + "\n"
            # a reopening line that eats half the limit would never let us progress
            tail = reopen + tail.lstrip("\n") if length(reopen) < limit // 2 else tail.lstrip("\n")
        else:
            head = head.rstrip()
            tail = tail.lstrip()
        if head:
            chunks.append(head)
        rest = tail
    return chunks


class Throttle:
    """At most one action per `interval` seconds per key (a chat): how often a live reply is edited."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[Hashable, float] = {}

    def wait_time(self, key: Hashable) -> float:
        last = self._last.get(key)
        if last is None:
            return 0.0
        return max(0.0, last + self.interval - self._clock())

    def mark(self, key: Hashable) -> None:
        self._last[key] = self._clock()

    async def wait(self, key: Hashable) -> None:
        delay = self.wait_time(key)
        if delay > 0:
            await asyncio.sleep(delay)
        self.mark(key)


class RecentIds:
    """A bounded set of ids already seen, each kept at most `ttl` seconds (None: until pushed
    out): the same event delivered twice is handled once. The one dedupe every channel uses,
    on top of the core's own (the core drops a message id it has already answered)."""

    def __init__(
        self,
        maxlen: int = 10_000,
        ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        initial: Iterable[Hashable] = (),
    ) -> None:
        self._seen: OrderedDict[Hashable, float] = OrderedDict()
        self._maxlen = maxlen
        self._ttl = ttl
        self._clock = clock
        for key in initial:
            self.add(key)

    def _expire(self) -> None:
        if self._ttl is None:
            return
        now = self._clock()
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if now - at < self._ttl:
                break
            self._seen.pop(oldest)

    def add(self, key: Hashable) -> bool:
        """Remember `key`; False when it was already there (a redelivery)."""
        self._expire()
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = self._clock()
        while len(self._seen) > self._maxlen:
            self._seen.popitem(last=False)
        return True

    def __contains__(self, key: Hashable) -> bool:
        self._expire()
        return key in self._seen

    def __iter__(self) -> Iterator[Hashable]:
        return iter(list(self._seen))

    def __len__(self) -> int:
        return len(self._seen)


class ChatLocks:
    """One lock per chat: a chat's messages are answered in order, different chats side by side."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, asyncio.Lock] = {}

    def __call__(self, chat: Hashable) -> asyncio.Lock:
        lock = self._locks.get(chat)
        if lock is None:
            lock = self._locks[chat] = asyncio.Lock()
        return lock


@contextlib.asynccontextmanager
async def keep_alive(
    action: Callable[[], Awaitable[object]],
    interval: float,
    *,
    tolerate: tuple[type[BaseException], ...] = (),
    on_stop: Callable[[], Awaitable[object]] | None = None,
) -> AsyncIterator[None]:
    """Repeat `action` every `interval` seconds while the body runs (the typing indicator).

    Platforms' typing indicators expire after a few seconds; generation can take longer.
    An error in `tolerate` (a network blip) is retried at the next beat; any other failure
    stops the repetition (a blocked chat) but never the body. `on_stop` clears the indicator.
    """

    async def loop() -> None:
        while True:
            try:
                await action()
            except asyncio.CancelledError:
                raise
            except tolerate:
                pass
            except Exception as exc:  # the indicator is a courtesy: never let it break a reply
                log.debug("keep_alive.stopped", error=type(exc).__name__)
                return
            await asyncio.sleep(interval)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if on_stop is not None:
            with contextlib.suppress(Exception):
                await on_stop()


async def drain(reply: Reply, *, close: bool = False) -> None:
    """Finish a reply's stream that was not shown to its end. The core records its turn when
    the stream ends, so by default it is read out (a send failed: the answer still happened);
    `close` stops the generation instead (nobody can read it there: the chat is gone)."""
    stream = reply.stream
    if stream is None:
        return
    closer = getattr(stream, "aclose", None)
    try:
        if close and closer is not None:
            await closer()
            return
        async for _ in stream:
            pass
    except Exception as exc:  # the reply is lost either way; the turn is what matters
        log.warning("channel.drain_failed", error=type(exc).__name__)


ShowFn = Callable[[str, bool], Awaitable[None]]


async def stream_edits(
    stream: AsyncIterator[str],
    show: ShowFn,
    throttle: Throttle,
    key: Hashable,
    *,
    tolerate: tuple[type[BaseException], ...] = (),
) -> str:
    """Read a reply stream to its end at the model's pace while showing it at the platform's.

    `show(text_so_far, final)` puts the text on screen (send, edit, continue in a new message);
    it runs at most once per `throttle` interval for `key`, never while the previous one is in
    flight, so a slow or rate-limited platform (a send waiting out a 429 or M_LIMIT_EXCEEDED)
    gets fewer, larger edits instead of a queue of rejected ones. A failed intermediate show of
    a `tolerate` type is logged and skipped: the final one catches up. Returns the whole text.
    """
    buffer: list[str] = []
    changed = asyncio.Event()
    done = False

    async def pump() -> None:
        nonlocal done
        try:
            async for delta in stream:
                if delta:
                    buffer.append(delta)
                    changed.set()
        finally:
            done = True
            changed.set()

    reader = asyncio.create_task(pump())
    failure: BaseException | None = None
    shown_live = False
    try:
        while not done:
            await changed.wait()
            changed.clear()
            if done:
                break
            pause = throttle.wait_time(key)
            if pause > 0:
                # wait out the pace, but go straight to the final write if the stream ends
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(reader), pause)
            if done:
                break
            throttle.mark(key)
            text = "".join(buffer)
            if text.strip():
                try:
                    await show(text, False)
                    shown_live = True
                except tolerate as exc:
                    log.warning("channel.stream_edit_failed", error=type(exc).__name__)
    except BaseException as exc:
        failure = exc
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        raise
    finally:
        if failure is None:
            await reader
    text = "".join(buffer)
    if text.strip():
        if shown_live:
            await throttle.wait(key)  # the closing edit respects the per-chat pace too
        await show(text, True)
    return text


SORRY = "Sorry, something went wrong on my side while answering. Please try again in a moment."


async def answer(
    assistant: ChannelAssistant,
    incoming: Incoming,
    deliver: Callable[[Reply], Awaitable[None]],
    apologize: Callable[[str], Awaitable[None]],
    *,
    platform: str,
    passthrough: tuple[type[BaseException], ...] = (),
    **log_fields: object,
) -> None:
    """Ask the core, deliver its reply, and say sorry when either fails: a person must hear
    that something went wrong, never silence. `passthrough` errors (the chat is gone) go to
    the caller untouched. When even the apology fails the reply is abandoned, so recovery
    (core/recovery.py) answers the message once the platform is reachable again."""
    reply: Reply | None = None
    try:
        reply = await assistant.handle(incoming)
        if reply is not None:
            await deliver(reply)
    except passthrough:
        if reply is not None:
            reply.finished()  # nobody can read an answer there
        raise
    except Exception:
        log.exception(f"{platform}.reply_failed", **log_fields)
        if reply is not None:
            await drain(reply)
        try:
            await apologize(SORRY)
        except passthrough:
            raise
        except Exception as exc:
            log.error(f"{platform}.apology_failed", error=type(exc).__name__, **log_fields)
            if reply is not None:
                reply.abandon()  # nothing reached them: answered once the platform is back
            return
    if reply is not None:
        reply.finished()


class ChannelAssistant(Protocol):
    """What a channel needs from `core.assistant.Assistant`: the one contract of every channel
    (and of the one fake assistant the channel tests share)."""

    async def handle(self, msg: Incoming) -> Reply | None: ...
    def accept(self, msg: Incoming) -> None: ...
    def dismiss(self, msg: Incoming) -> None: ...
    def reading(self, msg: Incoming) -> AbstractContextManager[None]: ...
    async def unanswered(self, platform: str) -> list[Incoming]: ...
    async def redact(self, platform: str, chat_id: str, message_id: str) -> None: ...
    async def chat_closed(self, platform: str, chat_id: str) -> None: ...
    async def chat_opened(self, platform: str, chat_id: str) -> None: ...
    def command_list(self) -> list[tuple[str, str]]: ...


async def with_admin_flag(incoming: Incoming, is_admin: Callable[[], Awaitable[bool]]) -> Incoming:
    """Tell the core whether the sender administers this chat, asking the platform only when the
    core's rule needs to know (core/chat_admin.py decides; the channel only answers)."""
    if not chat_admin.needs_admin(incoming):
        return incoming
    try:
        admin = await is_admin()
    except Exception as exc:  # unknown counts as "not an admin": the change is refused, not made
        log.warning(f"{incoming.platform}.admin_check_failed", error=type(exc).__name__)
        admin = False
    return dataclasses.replace(incoming, sender_admin=admin)


# ---- the registry `confidante run` reads ---------------------------------------------------------

Runner = Callable[["ChannelAssistant", "ChannelSettings"], Awaitable[None]]


@dataclass(frozen=True)
class ChannelSpec:
    """A platform `confidante run` can start: when it is configured, and where its runner is."""

    name: str
    enabled: Callable[[ChannelSettings], bool]
    runner: str  # "module:function", imported only when the platform is configured


CHANNELS: tuple[ChannelSpec, ...] = (
    ChannelSpec("telegram", lambda s: s.telegram.enabled, "bots.telegram:run_telegram"),
    ChannelSpec("slack", lambda s: s.slack.enabled, "bots.slack:run_slack"),
    ChannelSpec("matrix", lambda s: s.matrix.enabled, "bots.matrix:run_matrix"),
)


def configured(settings: ChannelSettings) -> list[str]:
    """The platforms whose settings are given (`confidante run` starts these)."""
    return [spec.name for spec in CHANNELS if spec.enabled(settings)]


def build_channels(settings: ChannelSettings) -> dict[str, Runner]:
    """The runners of every configured platform, by name (empty: only the terminal is left)."""
    runners: dict[str, Runner] = {}
    for spec in CHANNELS:
        if spec.enabled(settings):
            module, _, function = spec.runner.partition(":")
            runners[spec.name] = getattr(importlib.import_module(module), function)
    return runners
