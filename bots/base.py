"""What every channel shares: splitting long replies, throttling edits, typing keep-alive, dedupe.

Nothing here knows a platform: Telegram, Slack and Matrix each pass their own limits and
length function (Telegram counts UTF-16 code units, Slack counts characters).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass

import structlog

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


def split_text(text: str, limit: int, *, length: LengthFn = len) -> list[str]:
    """Split `text` into chunks no longer than `limit` by `length`.

    Cuts at paragraph, then line, then sentence, then word boundaries, never inside a fenced
    code block's markup: when a code block itself is longer than the limit it is closed at
    the end of one chunk and reopened (same info string) at the start of the next, so each
    chunk renders on its own. Whitespace at a cut is dropped; nothing else is.
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
        reserve = 1 + longest if any(ln.fence for ln in lines) else 0
        hard = _fit(rest, limit - reserve, length)
        cut, opener = _choose_cut(rest, hard, lines, min_cut=max(1, hard * 3 // 10))
        head, tail = rest[:cut], rest[cut:]
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


def strip_command_suffix(text: str, bot_username: str) -> tuple[str, str | None]:
    """Turn "/memory@ThisBot args" into "/memory args".

    Returns (text, addressee): addressee is the @name the command carried (None when bare), so
    the caller can tell a command for this bot from one for another bot in the same group.
    """
    m = re.match(r"^/([A-Za-z0-9_]{1,64})@([A-Za-z0-9_]{3,64})(?=\s|$)", text)
    if not m:
        return text, None
    if m.group(2).lower() != bot_username.lower():
        return text, m.group(2)
    return f"/{m.group(1)}{text[m.end() :]}", m.group(2)


def remove_mention(text: str, bot_username: str) -> str:
    """Drop "@ThisBot" from the text so the model reads what was said, not how it was addressed."""
    cleaned = re.sub(rf"(?<![\w@])@{re.escape(bot_username)}\b[,:]?", " ", text, flags=re.IGNORECASE)
    cleaned = re.sub(r"[ \t]{2,}", " ", cleaned).strip()
    return cleaned or text.strip()


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
    """A bounded set of ids already seen: the same update delivered twice is handled once."""

    def __init__(self, maxlen: int = 10_000) -> None:
        self._seen: OrderedDict[Hashable, None] = OrderedDict()
        self._maxlen = maxlen

    def add(self, key: Hashable) -> bool:
        """Remember `key`; False when it was already there."""
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self._maxlen:
            self._seen.popitem(last=False)
        return True

    def __contains__(self, key: Hashable) -> bool:
        return key in self._seen


@contextlib.asynccontextmanager
async def keep_alive(action: Callable[[], Awaitable[object]], interval: float) -> AsyncIterator[None]:
    """Repeat `action` every `interval` seconds while the body runs.

    Platforms' typing indicators expire after a few seconds; generation can take longer.
    A failing action stops the repetition (a blocked chat) but never the body.
    """

    async def loop() -> None:
        while True:
            try:
                await action()
            except asyncio.CancelledError:
                raise
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
