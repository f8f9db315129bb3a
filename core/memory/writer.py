"""Recording turns off the reply path: a journal makes a turn durable at once, a background
thread writes it to LanceDB a moment later, several turns in one commit.

Why: a LanceDB commit costs milliseconds and leaves a small fragment that every later query
opens, and the reply's own turn used to be embedded and written before the person's lock was
released. Now the chat path appends one line to a local file (microseconds) and goes on; the
writer embeds what has no vector yet and commits the person's message together with the reply.

Nothing is lost: a turn is in the journal before `stage` returns and leaves it only once
LanceDB holds it, and the next start writes whatever a crash left there (the write checks ids,
so a turn committed just before the crash is not stored twice). The journal is as durable as
LanceDB's own local files (written to the OS, not fsynced: object_store's local backend does
not fsync either), and it is the process's own: an exclusive lock keeps a second chat process
on the same data dir from replaying turns the first has not written yet.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import functools
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import structlog

from core.memory.records import Turn

log = structlog.get_logger(__name__)

# How long a staged turn waits for company (its reply, other people's turns): one commit for
# everything staged meanwhile, as one fragment, instead of one per turn. Nothing reads LanceDB
# for these turns in that second without settling first (see Store.record_turns).
LINGER_SECONDS = 1.0
MAX_BATCH = 512  # turns: commit at once beyond this many
RETRY_SECONDS = 1.0
# A settle gives up after this many failed commits in a row: a deletion or a read that needs
# every turn in LanceDB fails with the store's error instead of hanging (the turns stay journaled).
SETTLE_ATTEMPTS = 3


def _line(turn: Turn) -> bytes:
    row = asdict(turn)
    row.pop("vector")  # re-embedded on replay: a vector is 384 floats, the text is enough
    row["ts"] = turn.ts.isoformat()
    return (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")


def _turn(line: bytes) -> Turn:
    row = json.loads(line.decode("utf-8", "surrogatepass"))
    row["ts"] = datetime.fromisoformat(row["ts"])
    return Turn(**row)


class JournalBusy(Exception):
    """Another live process owns this journal."""


class TurnsNotWritten(RuntimeError):
    """LanceDB keeps rejecting the staged turns (disk full, permissions): they wait in the journal."""


class Journal:
    """Turns accepted but not yet in LanceDB, one JSON line each (mode 0600: it holds text)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise JournalBusy(str(path)) from exc
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)

    def read(self) -> list[Turn]:
        """What a previous run left (a line cut short by a crash is skipped)."""
        turns = []
        for line in self.path.read_bytes().splitlines():
            try:
                turns.append(_turn(line))
            except (ValueError, TypeError, KeyError):
                log.warning("skipping an unreadable journal line", path=str(self.path))
        return turns

    def append(self, turns: Sequence[Turn]) -> None:
        os.write(self._fd, b"".join(_line(t) for t in turns))

    def keep_only(self, turns: Iterable[Turn]) -> None:
        """Drop what was committed: truncate when nothing is left, else replace the file
        atomically with the turns still waiting (a crash keeps either the old or the new)."""
        rest = b"".join(_line(t) for t in turns)
        if not rest:
            os.ftruncate(self._fd, 0)
            return
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, rest)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)

    def close(self) -> None:
        os.close(self._fd)
        os.close(self._lock_fd)  # releases the flock


class TurnWriter:
    """Stages turns (journal + memory) and commits them from one background thread.

    `commit(turns)` stores turns whose ids are not stored yet (embedding those without a
    vector); `stored(ids)` says which ids LanceDB already holds (the duplicate check).
    """

    def __init__(
        self,
        journal: Journal,
        commit: Callable[[list[Turn]], object],
        stored: Callable[[list[str]], set[str]],
        *,
        linger: float | None = None,
    ) -> None:
        self.journal = journal
        self._commit = commit
        self._stored = stored
        self._linger = LINGER_SECONDS if linger is None else linger
        self._cond = threading.Condition()
        self._pending: OrderedDict[str, Turn] = OrderedDict()
        self._staged_at: dict[str, float] = {}
        self._after: list[tuple[set[str], Callable[[], None]]] = []
        self._urgent = False
        self._stopping = False
        self._failures = 0  # failed commits in a row
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="turn-writer", daemon=True)
        self._thread.start()

    # -- the chat path ----------------------------------------------------------------------

    def stage(
        self,
        turns: Sequence[Turn],
        *,
        check: bool = True,
        then: Callable[[], None] | None = None,
    ) -> int:
        """Accept the turns not stored or staged yet; returns how many were new.

        `check` asks LanceDB about ids not staged here (a platform redelivering a message after
        a restart); `then` runs in the writer thread once these turns are committed (a worker
        reading LanceDB sees them).
        """
        unique = list({t.id: t for t in turns}.values())
        run_now = False
        if then is not None:  # runs in the writer thread, with the stager's context (request id)
            then = functools.partial(contextvars.copy_context().run, then)
        with self._cond:
            fresh = [t for t in unique if t.id not in self._pending]
            if check and fresh:
                known = self._stored([t.id for t in fresh])
                fresh = [t for t in fresh if t.id not in known]
            if fresh:
                self.journal.append(fresh)
                now = time.monotonic()
                for t in fresh:
                    self._pending[t.id] = t
                    self._staged_at[t.id] = now
            if then is not None:
                waiting = {t.id for t in unique if t.id in self._pending}
                if waiting:
                    self._after.append((waiting, then))
                else:
                    run_now = True  # nothing of these waits for a commit
            self._cond.notify_all()
        if run_now and then is not None:
            then()
        return len(fresh)

    def pending(self, keep: Callable[[Turn], bool] | None = None) -> list[Turn]:
        """Staged turns not committed yet (those `keep` accepts), in staging order."""
        with self._cond:
            return [t for t in self._pending.values() if keep is None or keep(t)]

    def failing(self) -> str | None:
        """Why commits are failing (readiness checks), or None when the last one worked."""
        with self._cond:
            return f"{self._failures} failed commits in a row ({self._error})" if self._failures else None

    def settle(self, timeout: float | None = None) -> bool:
        """Wait until everything staged so far is in LanceDB (reads that must see every turn,
        deletions, edits). Returns False on timeout; raises TurnsNotWritten when the commits
        keep failing."""
        if threading.current_thread() is self._thread:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = set(self._pending)
            self._urgent = True
            failed_before = self._failures
            self._cond.notify_all()
            while target & set(self._pending):
                if self._failures - failed_before >= SETTLE_ATTEMPTS:
                    raise TurnsNotWritten(
                        f"Could not write to the memory store ({self._error}). The messages are kept "
                        "in the journal and written once it works: check free disk space and the "
                        "data directory's permissions."
                    )
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is staged, stop the thread, release the journal."""
        try:
            settled = self.settle(timeout)
        except TurnsNotWritten:
            settled = False
        if not settled:
            log.warning("turns left in the journal at shutdown; the next start writes them")
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        self.journal.close()

    # -- the writer thread ------------------------------------------------------------------

    def _due(self) -> bool:
        if not self._pending:
            return False
        if self._urgent or self._stopping or len(self._pending) >= MAX_BATCH:
            return True
        oldest = next(iter(self._pending))
        return time.monotonic() - self._staged_at[oldest] >= self._linger

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due():
                    if self._stopping:
                        return
                    oldest = next(iter(self._pending), None)
                    wait = (
                        None if oldest is None else self._staged_at[oldest] + self._linger - time.monotonic()
                    )
                    self._cond.wait(None if wait is None else max(wait, 0.001))
                batch = list(self._pending.values())
                self._urgent = False
            try:
                self._commit(batch)
            except Exception as exc:  # LanceDB failed: the turns stay staged and journaled
                log.warning("writing turns failed; retrying", turns=len(batch), error=str(exc))
                with self._cond:
                    self._failures += 1
                    self._error = exc
                    self._cond.notify_all()
                    if self._stopping:  # the next start writes them from the journal
                        return
                    self._cond.wait(RETRY_SECONDS)
                continue
            committed = {t.id for t in batch}
            with self._cond:
                self._failures, self._error = 0, None
                waiting = set(self._pending) - committed
                ready = [fn for ids, fn in self._after if not ids & waiting]
                self._after = [(ids, fn) for ids, fn in self._after if ids & waiting]
            for fn in ready:  # before `settle` returns: whoever waited sees their effects too
                try:
                    fn()
                except Exception as exc:
                    log.warning("after-commit callback failed", error=str(exc))
            with self._cond:
                for t in batch:
                    if self._pending.get(t.id) is t:
                        del self._pending[t.id]
                        del self._staged_at[t.id]
                with contextlib.suppress(OSError):  # a failed trim leaves extra lines: replay skips them
                    self.journal.keep_only(self._pending.values())
                self._cond.notify_all()
