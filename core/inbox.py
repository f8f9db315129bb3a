"""The durable inbox: every message a channel accepts, with how far its answer got.

Why: platforms consider a message delivered once we acknowledge it (Telegram's next getUpdates
offset, Slack's HTTP 200, Matrix's sync token), which happens long before the reply has
streamed out. A crash in between used to lose the answer: the turn was in the journal, but
nothing looked for messages that were never answered, and a redelivered one was dropped as a
duplicate. Here each message is recorded (SQLite, WAL: it survives a killed process) before
the channel acknowledges it where the platform allows, and moves received -> replying ->
answered, keeping the ids of the reply messages the platform returned. At the next start each
channel asks for what an earlier run left unanswered and answers it once.

A crash between the platform accepting a reply message and `sent` recording its id is the one
gap: the next start then sends the answer again (one duplicate rather than a lost answer).
The message text is kept only until the message is answered (the file is private to the user).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
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
    PRIMARY KEY (platform, chat_id, message_id)
)
"""


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
            "SELECT state, run, received_at, reply_ids, message FROM inbox"
            " WHERE platform = ? AND chat_id = ? AND message_id = ?",
            key,
        ).fetchone()
        if row is None:
            return None
        state, run, received_at, reply_ids, message = row
        return Entry(State(state), run, received_at, tuple(json.loads(reply_ids)), _load(message))

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

    def unanswered(self, platform: str) -> list[Entry]:
        """Messages an earlier run received on `platform` and never answered, oldest first."""
        with self._lock:
            keys = self._db.execute(
                "SELECT platform, chat_id, message_id FROM inbox"
                " WHERE platform = ? AND state != ? AND run != ? ORDER BY received_at",
                (platform, State.ANSWERED, self.run),
            ).fetchall()
            entries = [self._get(tuple(k)) for k in keys]  # type: ignore[arg-type]
        return [e for e in entries if e is not None and e.message is not None]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Receipt:
    """What a channel reports back while it delivers one reply (see Reply.sent / Reply.finished)."""

    def __init__(self, inbox: Inbox, key: Key, *, done: Callable[[], None] | None = None) -> None:
        self.inbox = inbox
        self.key = key
        self._done = done

    def sent(self, reply_id: str) -> None:
        self.inbox.sent(self.key, reply_id)

    def answered(self) -> None:
        self.inbox.answered(self.key)
        if self._done is not None:
            self._done()
