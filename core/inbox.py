"""The durable inbox: every message a channel accepts, with how far its answer got.

Why: platforms consider a message delivered once we acknowledge it (Telegram's next getUpdates
offset, Slack's HTTP 200, Matrix's sync token), which happens long before the reply has
streamed out. A crash in between used to lose the answer: the turn was in the journal, but
nothing looked for messages that were never answered, and a redelivered one was dropped as a
duplicate. Here each message is recorded (SQLite, WAL: it survives a killed process) before
the channel acknowledges it where the platform allows, and moves received -> replying ->
answered, keeping the ids of the reply messages the platform returned. At the next start each
channel asks for what an earlier run left unanswered and answers it once.

Several chat processes may share one data dir (core/recovery.py): each registers itself in
`runs` and keeps its row fresh; a message belongs to the run that received or claimed it, and
a live process claims (compare-and-set on `run`) what a dead one left. The rowid is the arrival
order across processes: in a chat, only the earliest unanswered message is answered next.

A crash between the platform accepting a reply message and `sent` recording its id is the one
gap: the next start then sends the answer again (one duplicate rather than a lost answer).
The message text is kept only until the message is answered (the file is private to the user).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from core.messages import Incoming

Key = tuple[str, str, str]  # platform, chat id, message id

KEEP_SECONDS = 7 * 24 * 3600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    platform TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    state TEXT NOT NULL,
    run TEXT NOT NULL,
    received_at REAL NOT NULL,
    reply_ids TEXT NOT NULL DEFAULT '[]',
    message TEXT,
    late INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (platform, chat_id, message_id)
)
"""
# the chats with something left to answer (what the order gate and the sweeps look at)
_OPEN_INDEX = "CREATE INDEX IF NOT EXISTS inbox_open ON inbox (platform, chat_id) WHERE state != 'answered'"
_RUNS = """
CREATE TABLE IF NOT EXISTS runs (
    run TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    seen REAL NOT NULL
)
"""
# a run whose row was not refreshed for this long is dead (a process on another machine, or a
# hung one); on this machine a run whose pid is gone is dead at once
DEAD_AFTER_SECONDS = 15.0
_HOST = socket.gethostname()


class State(StrEnum):
    RECEIVED = "received"
    REPLYING = "replying"
    ANSWERED = "answered"


@dataclass(frozen=True)
class Entry:
    state: State
    run: str  # the process that received it
    received_at: float
    reply_ids: tuple[str, ...]
    message: Incoming | None  # None once answered
    late: bool = False  # claimed from a dead run, or recovered after its answer failed


def key_of(msg: Incoming) -> Key:
    return (msg.platform, msg.chat_id, msg.message_id)


def _dump(msg: Incoming) -> str:
    row = asdict(msg)
    row["ts"] = msg.ts.isoformat()
    return json.dumps(row)  # ASCII: a lone surrogate in the text survives the round trip


def _load(raw: str | None) -> Incoming | None:
    if not raw:
        return None
    row = json.loads(raw)
    row["ts"] = datetime.fromisoformat(row["ts"])
    known = {f.name for f in fields(Incoming)}
    return Incoming(**{k: v for k, v in row.items() if k in known})


class Inbox:
    """One SQLite file in the data dir; safe to call from any thread."""

    def __init__(self, path: Path | None = None) -> None:
        """`path` None keeps it in memory (a process with nothing to restart, tests)."""
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600, exist_ok=True)
        self.path = path
        self.run = uuid.uuid4().hex  # this process: rows of another run are left from before
        self._closed = False
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path or ":memory:", check_same_thread=False, isolation_level=None)
        # A commit is handed to the OS before it returns: it survives the process being killed
        # (not a power cut, like the turn journal), and costs no fsync on the reply path.
        # secure_delete overwrites the text dropped at `answered`, and the rollback journal is
        # deleted at each commit: a forgotten message's text stays in no file of the data dir.
        self._db.execute("PRAGMA journal_mode=DELETE")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute(_SCHEMA)
        if "late" not in {row[1] for row in self._db.execute("PRAGMA table_info(inbox)")}:
            self._db.execute("ALTER TABLE inbox ADD COLUMN late INTEGER NOT NULL DEFAULT 0")
        self._db.execute(_OPEN_INDEX)
        self._db.execute(_RUNS)
        self.dead_after = DEAD_AFTER_SECONDS
        self.heartbeat()
        # past any late-reply window and any platform's redelivery (a channel that never asks
        # for its unanswered messages, like the terminal, leaves them here until then)
        self._db.execute("DELETE FROM inbox WHERE received_at < ?", (time.time() - KEEP_SECONDS,))

    def receive(self, msg: Incoming) -> Entry:
        """Record a message (once: a redelivery keeps the first row) and return its row."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO inbox (platform, chat_id, message_id, state, run, received_at, message)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*key_of(msg), State.RECEIVED, self.run, time.time(), _dump(msg)),
            )
            return self._get(key_of(msg))  # type: ignore[return-value]

    def get(self, key: Key) -> Entry | None:
        with self._lock:
            return self._get(key)

    def _get(self, key: Key) -> Entry | None:
        row = self._db.execute(
            "SELECT state, run, received_at, reply_ids, message, late FROM inbox"
            " WHERE platform = ? AND chat_id = ? AND message_id = ?",
            key,
        ).fetchone()
        if row is None:
            return None
        state, run, received_at, reply_ids, message, late = row
        return Entry(State(state), run, received_at, tuple(json.loads(reply_ids)), _load(message), bool(late))

    def replying(self, key: Key) -> None:
        self._set(key, "state = ?", State.REPLYING)

    def sent(self, key: Key, reply_id: str) -> None:
        """The platform accepted a reply message: never send it again."""
        with self._lock:
            row = self._db.execute(
                "SELECT reply_ids FROM inbox WHERE platform = ? AND chat_id = ? AND message_id = ?", key
            ).fetchone()
            if row is None:
                return
            ids = json.loads(row[0])
            if reply_id not in ids:
                ids.append(reply_id)
                self._db.execute(
                    "UPDATE inbox SET reply_ids = ? WHERE platform = ? AND chat_id = ? AND message_id = ?",
                    (json.dumps(ids), *key),
                )

    def answered(self, key: Key) -> None:
        """Done: the answer is out (or there was nothing to say). The text is dropped here."""
        self._set(key, "state = ?, message = NULL", State.ANSWERED)

    def _set(self, key: Key, assignments: str, *values: object) -> None:
        with self._lock:
            self._db.execute(
                f"UPDATE inbox SET {assignments} WHERE platform = ? AND chat_id = ? AND message_id = ?",
                (*values, *key),
            )

    # -- runs: which processes are alive (several may share the data dir) ---------------------

    def heartbeat(self) -> None:
        """This run is alive (core/recovery.py calls it every few seconds)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO runs (run, host, pid, seen) VALUES (?, ?, ?, ?)",
                (self.run, _HOST, os.getpid(), time.time()),
            )
            # rows of runs killed long ago (a stopped run deletes its own)
            self._db.execute("DELETE FROM runs WHERE seen < ?", (time.time() - KEEP_SECONDS,))

    def live_runs(self) -> set[str]:
        """Runs (this one included) that may still be answering what they hold."""
        with self._lock:
            rows = self._db.execute("SELECT run, host, pid, seen FROM runs").fetchall()
        now = time.time()
        live = {self.run}
        for run, host, pid, seen in rows:
            if now - seen > self.dead_after:
                continue
            if host == _HOST and pid != os.getpid() and not _pid_alive(pid):
                continue  # killed: no need to wait for its row to go stale
            live.add(run)
        return live

    def others_alive(self) -> bool:
        return len(self.live_runs()) > 1

    def claim(self, key: Key, from_run: str) -> bool:
        """Take a message over from a dead run (compare-and-set: one claimer wins)."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE inbox SET run = ?, late = 1 WHERE platform = ? AND chat_id = ? AND message_id = ?"
                " AND run = ? AND state != 'answered'",
                (self.run, *key, from_run),
            )
            return cur.rowcount == 1

    def unanswered(self, platform: str) -> list[Entry]:
        """Messages that dead runs (this process before a restart, another process that was
        killed) received on `platform` and never answered, now claimed by this run, oldest first."""
        live = self.live_runs()
        with self._lock:
            rows = self._db.execute(
                "SELECT platform, chat_id, message_id, run FROM inbox"
                " WHERE platform = ? AND state != 'answered' ORDER BY rowid",
                (platform,),
            ).fetchall()
        claimed = [(p, c, m) for p, c, m, run in rows if run not in live and self.claim((p, c, m), run)]
        return self._entries(claimed)

    def stalled(self, platform: str, older_than: float, busy: set[Key]) -> list[Entry]:
        """This run's messages on `platform` received over `older_than` seconds ago that nothing
        is answering (`busy`: being answered now) and that are next in their chat: their answer
        failed (the connection was lost) or never started. Marked late, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT platform, chat_id, message_id FROM inbox AS i"
                " WHERE platform = ? AND state != 'answered' AND run = ? AND received_at < ?"
                " AND NOT EXISTS (SELECT 1 FROM inbox AS e WHERE e.platform = i.platform"
                " AND e.chat_id = i.chat_id AND e.state != 'answered' AND e.rowid < i.rowid)"
                " ORDER BY rowid",
                (platform, self.run, time.time() - older_than),
            ).fetchall()
            keys = [tuple(r) for r in rows if tuple(r) not in busy]
            for key in keys:
                self._db.execute(
                    "UPDATE inbox SET late = 1 WHERE platform = ? AND chat_id = ? AND message_id = ?", key
                )
        return self._entries(keys)  # type: ignore[arg-type]

    def next_up(self, platform: str, busy: set[Key], older_than: float = 0.0) -> list[Entry]:
        """This run's messages on `platform` that are now first in their chat and not being
        answered: each waited for an earlier one (maybe another process's) to be answered."""
        with self._lock:
            rows = self._db.execute(
                "SELECT platform, chat_id, message_id FROM inbox AS i"
                " WHERE platform = ? AND state = 'received' AND run = ? AND received_at <= ?"
                " AND NOT EXISTS (SELECT 1 FROM inbox AS e WHERE e.platform = i.platform"
                " AND e.chat_id = i.chat_id AND e.state != 'answered' AND e.rowid < i.rowid)"
                " ORDER BY rowid",
                (platform, self.run, time.time() - older_than),
            ).fetchall()
        return self._entries([tuple(r) for r in rows if tuple(r) not in busy])  # type: ignore[misc]

    def open_before(self, key: Key) -> list[tuple[Key, str]]:
        """This chat's messages that came before this one and are still unanswered, with the
        run each belongs to (arrival order: the rowid)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT e.platform, e.chat_id, e.message_id, e.run FROM inbox AS e, inbox AS i"
                " WHERE i.platform = ? AND i.chat_id = ? AND i.message_id = ? AND e.platform = i.platform"
                " AND e.chat_id = i.chat_id AND e.state != 'answered' AND e.rowid < i.rowid",
                key,
            ).fetchall()
        return [((p, c, m), run) for p, c, m, run in rows]

    def answered_before(self, key: Key) -> str | None:
        """The run that answered this chat's previous message (None: none is recorded)."""
        with self._lock:
            row = self._db.execute(
                "SELECT e.run FROM inbox AS e, inbox AS i WHERE i.platform = ? AND i.chat_id = ?"
                " AND i.message_id = ? AND e.platform = i.platform AND e.chat_id = i.chat_id"
                " AND e.state = 'answered' AND e.rowid < i.rowid ORDER BY e.rowid DESC LIMIT 1",
                key,
            ).fetchone()
        return row[0] if row else None

    def _entries(self, keys: list[Key]) -> list[Entry]:
        with self._lock:
            entries = [self._get(k) for k in keys]
        return [e for e in entries if e is not None and e.message is not None]

    def close(self) -> None:
        """The process stops: its row goes, so what it leaves is claimed at once elsewhere."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._db.execute("DELETE FROM runs WHERE run = ?", (self.run,))
            self._db.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Receipt:
    """What a channel reports back while it delivers one reply (see Reply.sent / Reply.finished).

    `done` runs when the answer is out; `released` when the receipt is dropped without that (the
    channel gave up: the connection is gone), so the message no longer counts as being answered
    and the recovery sweep answers it later."""

    def __init__(
        self,
        inbox: Inbox,
        key: Key,
        *,
        done: Callable[[], None] | None = None,
        released: Callable[[], None] | None = None,
    ) -> None:
        self.inbox = inbox
        self.key = key
        self._done = done
        self._released = weakref.finalize(self, released) if released is not None else None

    def sent(self, reply_id: str) -> None:
        self.inbox.sent(self.key, reply_id)

    def abandoned(self) -> None:
        if self._released is not None:
            self._released()  # runs the release once, then detaches

    def answered(self) -> None:
        if self._released is not None:
            self._released.detach()
        self.inbox.answered(self.key)
        if self._done is not None:
            self._done()
