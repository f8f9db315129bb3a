"""The durable reminder store: SQLite beside the inbox (`<data_dir>/reminders.sqlite3`).

Why SQLite and not a LanceDB table: delivery needs an atomic compare-and-set ("claim this
occurrence unless someone already did") and many tiny in-place updates (next due time, sent
state), across processes and surviving a SIGKILL. SQLite in WAL mode gives exactly that with
one fsync per step; LanceDB is a versioned columnar store built for appends and vector search,
where every update writes a new table version. Reminders are not memories (they never reach a
prompt or the model), so they need none of LanceDB's search either. `secure_delete` makes
/forget_me's deletion real on disk.

Each occurrence has an id, `<reminder>@<due UTC>`; the `deliveries` table records its claim
and, once the platform accepted the message, its message id. A second claim of a sent
occurrence is refused, which is what makes delivery at-most-once per occurrence; the dispatcher
re-sends a claim left by a dead process, which makes it at-least-once (core/reminders/dispatch.py).
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reminders (
    id TEXT PRIMARY KEY,
    person_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    chat_kind TEXT NOT NULL,
    thread_id TEXT,
    setter TEXT NOT NULL,
    what TEXT NOT NULL,
    tz TEXT NOT NULL,
    rule TEXT,
    dtstart TEXT,
    every TEXT NOT NULL DEFAULT '',
    next_due TEXT,
    created_at TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'active'
);
CREATE INDEX IF NOT EXISTS reminders_due ON reminders (state, next_due);
CREATE INDEX IF NOT EXISTS reminders_person ON reminders (person_id, state);
CREATE TABLE IF NOT EXISTS deliveries (
    occurrence_id TEXT PRIMARY KEY,
    reminder_id TEXT NOT NULL,
    due TEXT NOT NULL,
    state TEXT NOT NULL,
    claimed_by TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    message_id TEXT,
    sent_at TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_reminder ON deliveries (reminder_id);
"""
# Columns added after the first release: ALTER TABLE'd into an older file on open.
# kind: "reminder" (asked for) or "followup" (proposed from an open loop, core/reminders/followups.py);
# source: the turn a follow-up came from (forgetting it cancels the follow-up);
# event_key: one follow-up per event however often it is mentioned; event_day: the event's local date.
_ADDED = (
    ("kind", "TEXT NOT NULL DEFAULT 'reminder'"),
    ("source", "TEXT"),
    ("event_key", "TEXT"),
    ("event_day", "TEXT"),
)
_BASE_COLUMNS = 15
REMINDER, FOLLOWUP = "reminder", "followup"

ACTIVE, DONE, CANCELLED, UNDELIVERABLE = "active", "done", "cancelled", "undeliverable"
DROPPED = "dropped"  # a follow-up the daily cap pushed past its event
CLAIMED, SENT = "claimed", "sent"


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def _ts(raw: str | None) -> datetime | None:
    return datetime.fromisoformat(raw) if raw else None


@dataclass(frozen=True)
class Reminder:
    id: str
    person_id: str
    platform: str
    chat_id: str
    chat_kind: str
    thread_id: str | None
    setter: str  # the platform account that set it: in a group only it may cancel
    what: str
    tz: str
    rule: str | None
    dtstart: str | None  # local wall time the rule counts from
    every: str
    next_due: datetime | None
    created_at: datetime
    state: str
    kind: str = REMINDER
    source: str | None = None
    event_key: str | None = None
    event_day: str | None = None

    @property
    def is_followup(self) -> bool:
        return self.kind == FOLLOWUP

    def occurrence_id(self) -> str:
        assert self.next_due is not None
        return f"{self.id}@{_iso(self.next_due)}"


@dataclass(frozen=True)
class Claim:
    """An occurrence this process may send now; `attempts` > 1 when an earlier claim died."""

    reminder: Reminder
    occurrence_id: str
    due: datetime
    attempts: int


class ReminderStore:
    def __init__(self, path: Path | None = None) -> None:
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            str(path) if path else ":memory:", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA busy_timeout=10000")
        if path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
            path.chmod(0o600)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(_SCHEMA)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(reminders)")}
        for name, decl in _ADDED:
            if name not in have:
                self._db.execute(f"ALTER TABLE reminders ADD COLUMN {name} {decl}")
        self._db.execute("CREATE INDEX IF NOT EXISTS reminders_event ON reminders (person_id, event_key)")

    # -- writing ------------------------------------------------------------------------------

    def add(
        self,
        *,
        person_id: str,
        platform: str,
        chat_id: str,
        chat_kind: str,
        setter: str,
        what: str,
        tz: str,
        first: datetime,
        thread_id: str | None = None,
        rule: str | None = None,
        every: str = "",
        now: datetime | None = None,
        kind: str = REMINDER,
        source: str | None = None,
        event_key: str | None = None,
        event_day: str | None = None,
    ) -> Reminder:
        rid = uuid.uuid4().hex[:12]
        dtstart = first.replace(tzinfo=None).isoformat() if rule else None
        with self._lock:
            self._db.execute(
                "INSERT INTO reminders (id, person_id, platform, chat_id, chat_kind, thread_id, setter, what, tz,"
                " rule, dtstart, every, next_due, created_at, state, kind, source, event_key, event_day)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    rid,
                    person_id,
                    platform,
                    chat_id,
                    chat_kind,
                    thread_id,
                    setter,
                    what,
                    tz,
                    rule,
                    dtstart,
                    every,
                    _iso(first),
                    _iso(now or datetime.now(UTC)),
                    ACTIVE,
                    kind,
                    source,
                    event_key,
                    event_day,
                ),
            )
        got = self.get(rid)
        assert got is not None
        return got

    def cancel(self, reminder_id: str) -> bool:
        with self._lock:
            cur = self._db.execute(
                "UPDATE reminders SET state = ?, next_due = NULL WHERE id = ? AND state = ?",
                (CANCELLED, reminder_id, ACTIVE),
            )
        return cur.rowcount == 1

    def snooze(self, reminder_id: str, until: datetime) -> Reminder | None:
        """Deliver a reminder again at `until` as a one-off (a recurring one keeps its rule:
        a snoozed occurrence becomes its own reminder)."""
        old = self.get(reminder_id)
        if old is None:
            return None
        return self.add(
            person_id=old.person_id,
            platform=old.platform,
            chat_id=old.chat_id,
            chat_kind=old.chat_kind,
            thread_id=old.thread_id,
            setter=old.setter,
            what=old.what,
            tz=old.tz,
            first=until,
        )

    # -- follow-ups (core/reminders/followups.py) -----------------------------------------------

    def has_event(self, person_id: str, event_key: str) -> bool:
        """A follow-up for this event exists in any state: mentioned again, or cancelled by the
        person, it is not proposed a second time."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM reminders WHERE person_id = ? AND event_key = ? LIMIT 1",
                (person_id, event_key),
            ).fetchone()
        return row is not None

    def cancel_followups(self, person_id: str) -> int:
        """/followups off: cancel all of a person's pending follow-ups."""
        with self._lock:
            return self._db.execute(
                "UPDATE reminders SET state = ?, next_due = NULL WHERE person_id = ? AND kind = ? AND state = ?",
                (CANCELLED, person_id, FOLLOWUP, ACTIVE),
            ).rowcount

    def cancel_followups_from(self, sources: list[str]) -> int:
        """Cancel pending follow-ups proposed from any of these turns, whoever's they are."""
        if not sources:
            return 0
        marks = ",".join("?" * len(sources))
        with self._lock:
            return self._db.execute(
                f"UPDATE reminders SET state = ?, next_due = NULL WHERE kind = ? AND state = ? AND source IN ({marks})",
                (CANCELLED, FOLLOWUP, ACTIVE, *sources),
            ).rowcount

    def followups_sent(self, person_id: str, start: datetime, end: datetime) -> int:
        """How many follow-ups reached this person between `start` and `end` (the daily cap)."""
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM deliveries d JOIN reminders r ON r.id = d.reminder_id"
                " WHERE r.person_id = ? AND r.kind = ? AND d.state = ? AND d.sent_at >= ? AND d.sent_at < ?",
                (person_id, FOLLOWUP, SENT, _iso(start), _iso(end)),
            ).fetchone()[0]

    def move(self, reminder: Reminder, new_due: datetime) -> bool:
        """Deliver this (one-off) occurrence later instead (a follow-up over the daily cap)."""
        assert reminder.next_due is not None
        with self._lock:
            cur = self._db.execute(
                "UPDATE reminders SET next_due = ? WHERE id = ? AND next_due = ? AND state = ?",
                (_iso(new_due), reminder.id, _iso(reminder.next_due), ACTIVE),
            )
        return cur.rowcount == 1

    def drop(self, reminder_id: str) -> bool:
        """A follow-up that can no longer be sent in time (its event is past): stop it unsent."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE reminders SET state = ?, next_due = NULL WHERE id = ? AND state = ?",
                (DROPPED, reminder_id, ACTIVE),
            )
        return cur.rowcount == 1

    def reassign(self, old_person: str, new_person: str) -> None:
        """Two accounts were linked into one person: their reminders go along."""
        with self._lock:
            self._db.execute(
                "UPDATE reminders SET person_id = ? WHERE person_id = ?", (new_person, old_person)
            )

    def forget_person(self, person_id: str) -> int:
        """Erase every reminder of a person and their delivery records (/forget_me)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "DELETE FROM deliveries WHERE reminder_id IN (SELECT id FROM reminders WHERE person_id = ?)",
                (person_id,),
            )
            cur = self._db.execute("DELETE FROM reminders WHERE person_id = ?", (person_id,))
            self._db.execute("COMMIT")
        return cur.rowcount

    # -- reading ------------------------------------------------------------------------------

    def get(self, reminder_id: str) -> Reminder | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM reminders WHERE id = ?", (reminder_id,)).fetchone()
        return _reminder(row) if row else None

    def active_of(
        self, person_id: str, *, platform: str | None = None, chat_id: str | None = None
    ) -> list[Reminder]:
        """A person's pending reminders, soonest first; limited to one chat when given."""
        sql = "SELECT * FROM reminders WHERE person_id = ? AND state = ?"
        args: list = [person_id, ACTIVE]
        if chat_id is not None:
            sql += " AND platform = ? AND chat_id = ?"
            args += [platform, chat_id]
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY next_due, created_at", args).fetchall()
        return [_reminder(r) for r in rows]

    def active_in_chat(self, platform: str, chat_id: str) -> list[Reminder]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM reminders WHERE platform = ? AND chat_id = ? AND state = ? ORDER BY next_due, created_at",
                (platform, chat_id, ACTIVE),
            ).fetchall()
        return [_reminder(r) for r in rows]

    def count_active(self, person_id: str) -> int:
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM reminders WHERE person_id = ? AND state = ?", (person_id, ACTIVE)
            ).fetchone()[0]

    def next_due(self, platforms: list[str], exclude: Collection[str] = ()) -> datetime | None:
        """The soonest due time on these platforms, leaving out `exclude` (reminder ids waiting
        for a retry, or for a chat this process does not serve)."""
        if not platforms:
            return None
        marks = ",".join("?" * len(platforms))
        skip = list(exclude)
        sql = f"SELECT MIN(next_due) FROM reminders WHERE state = ? AND platform IN ({marks})"
        if skip:
            sql += f" AND id NOT IN ({','.join('?' * len(skip))})"
        with self._lock:
            row = self._db.execute(sql, (ACTIVE, *platforms, *skip)).fetchone()
        return _ts(row[0])

    def due(self, now: datetime, platforms: list[str], limit: int = 100) -> list[Reminder]:
        if not platforms:
            return []
        marks = ",".join("?" * len(platforms))
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM reminders WHERE state = ? AND next_due <= ? AND platform IN ({marks})"
                " ORDER BY next_due LIMIT ?",
                (ACTIVE, _iso(now), *platforms, limit),
            ).fetchall()
        return [_reminder(r) for r in rows]

    def by_message(self, message_id: str) -> Reminder | None:
        """The reminder a sent message delivered (a reaction to it on Matrix snoozes it)."""
        with self._lock:
            row = self._db.execute(
                "SELECT r.* FROM deliveries d JOIN reminders r ON r.id = d.reminder_id WHERE d.message_id = ?",
                (message_id,),
            ).fetchone()
        return _reminder(row) if row else None

    def deliveries(self, reminder_id: str) -> list[tuple[str, str, int, str | None]]:
        """(occurrence id, state, attempts, message id) of every delivery, for tests and counts."""
        with self._lock:
            return self._db.execute(
                "SELECT occurrence_id, state, attempts, message_id FROM deliveries WHERE reminder_id = ? ORDER BY due",
                (reminder_id,),
            ).fetchall()

    # -- delivery -----------------------------------------------------------------------------

    def claim(self, reminder: Reminder, run: str) -> Claim | None:
        """Take the reminder's current occurrence for sending, or None if it was sent already
        (then the reminder is advanced) or another live run holds it."""
        occurrence = reminder.occurrence_id()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT state, claimed_by, attempts FROM deliveries WHERE occurrence_id = ?",
                    (occurrence,),
                ).fetchone()
                if row is None:
                    self._db.execute(
                        "INSERT INTO deliveries (occurrence_id, reminder_id, due, state, claimed_by) VALUES (?,?,?,?,?)",
                        (occurrence, reminder.id, _iso(reminder.next_due), CLAIMED, run),
                    )
                    attempts = 1
                elif row[0] == SENT:
                    self._db.execute("COMMIT")
                    return None
                elif row[1] == run:
                    attempts = row[2]
                else:  # a claim by a run that died (the dispatcher's file lock says it is gone)
                    attempts = row[2] + 1
                    self._db.execute(
                        "UPDATE deliveries SET claimed_by = ?, attempts = ? WHERE occurrence_id = ?",
                        (run, attempts, occurrence),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return Claim(reminder, occurrence, reminder.next_due, attempts)

    def sent(self, claim: Claim, message_id: str, next_due: datetime | None, now: datetime) -> None:
        """The platform accepted the message: record it and move the reminder on, atomically."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "UPDATE deliveries SET state = ?, message_id = ?, sent_at = ? WHERE occurrence_id = ?",
                (SENT, message_id, _iso(now), claim.occurrence_id),
            )
            self._advance(claim.reminder.id, claim.due, next_due)
            self._db.execute("COMMIT")

    def advance(self, reminder: Reminder, next_due: datetime | None) -> None:
        """An occurrence found already sent: move on (after a crash between send and record)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            assert reminder.next_due is not None
            self._advance(reminder.id, reminder.next_due, next_due)
            self._db.execute("COMMIT")

    def _advance(self, reminder_id: str, due: datetime, next_due: datetime | None) -> None:
        if next_due is None:
            self._db.execute(
                "UPDATE reminders SET state = ?, next_due = NULL WHERE id = ? AND next_due = ? AND state = ?",
                (DONE, reminder_id, _iso(due), ACTIVE),
            )
        else:
            self._db.execute(
                "UPDATE reminders SET next_due = ? WHERE id = ? AND next_due = ? AND state = ?",
                (_iso(next_due), reminder_id, _iso(due), ACTIVE),
            )

    def undeliverable(self, reminder_id: str) -> None:
        """The chat is gone (the person blocked the bot, left the room): stop trying."""
        with self._lock:
            self._db.execute(
                "UPDATE reminders SET state = ?, next_due = NULL WHERE id = ? AND state = ?",
                (UNDELIVERABLE, reminder_id, ACTIVE),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _reminder(row: tuple) -> Reminder:
    # the columns in Reminder's field order: the base ones (up to state), then the later ones
    *head, next_due, created_at, state = row[:_BASE_COLUMNS]
    return Reminder(*head, _ts(next_due), _ts(created_at), state, *row[_BASE_COLUMNS:])
