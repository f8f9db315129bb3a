"""The reminder store and dispatcher without a platform: claims, the per-person limit, erasure,
and a recurring reminder's next occurrence after an outage."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

from core.reminders.dispatch import Channel, Clock, Dispatcher, next_after
from core.reminders.service import Reminders
from core.reminders.store import ReminderStore

NOW = datetime(2026, 12, 4, 17, 0, tzinfo=UTC)


def add(store: ReminderStore, person: str = "p1", **kw):
    values = dict(
        person_id=person,
        platform="t",
        chat_id="c1",
        chat_kind="direct",
        setter="u1",
        what="call mum",
        tz="UTC",
    )
    values.update(kw)
    return store.add(first=kw.pop("first", NOW), **{k: v for k, v in values.items() if k != "first"})


def test_a_sent_occurrence_is_never_claimed_again_and_a_dead_runs_claim_is_taken_over(tmp_path):
    store = ReminderStore(tmp_path / "r.sqlite3")
    r = add(store)
    first = store.claim(r, "run-1")
    assert first is not None and first.attempts == 1
    again = store.claim(r, "run-2")  # run-1 died holding it
    assert again is not None and again.attempts == 2 and again.occurrence_id == first.occurrence_id
    store.sent(again, "m1", None, NOW)
    assert store.claim(r, "run-3") is None
    assert store.get(r.id).state == "done"
    assert store.deliveries(r.id) == [(first.occurrence_id, "sent", 2, "m1")]


def test_forget_person_deletes_reminders_and_deliveries_on_disk(tmp_path):
    path = tmp_path / "r.sqlite3"
    store = ReminderStore(path)
    mine, theirs = add(store, "p1", what="secret dentist appointment"), add(store, "p2")
    store.sent(store.claim(mine, "run"), "m1", NOW + timedelta(days=1), NOW)
    assert store.forget_person("p1") == 1
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT id FROM reminders").fetchall() == [(theirs.id,)]
    assert db.execute("SELECT COUNT(*) FROM deliveries").fetchone() == (0,)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    assert b"secret dentist" not in path.read_bytes()  # secure_delete: the text is gone from the file


async def test_the_per_person_limit_refuses_with_a_clear_message(tmp_path):
    reminders = Reminders(ReminderStore(), tmp_path / "lock", clock=Clock(1.0, NOW), per_person=2)
    args = dict(person_id="p1", tz="UTC", platform="t", chat_id="c1", chat_kind="direct", setter="u1")
    assert (await reminders.set("remind me in 5 minutes to a", **args)).startswith("I'll remind you")
    assert (await reminders.set("remind me in 6 minutes to b", **args)).startswith("I'll remind you")
    refused = await reminders.set("remind me in 7 minutes to c", **args)
    assert "2 reminders, the most I keep" in refused
    assert reminders.store.count_active("p1") == 2


def test_a_recurring_reminder_missed_during_an_outage_moves_to_the_next_future_one(tmp_path):
    store = ReminderStore()
    r = add(
        store, rule="FREQ=DAILY;BYHOUR=8;BYMINUTE=0;BYSECOND=0", first=datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    )
    nxt = next_after(r, datetime(2026, 12, 4, 9, 0, tzinfo=UTC))  # down for three days
    assert nxt == datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


async def test_a_failing_platform_is_retried_not_dropped(tmp_path):
    store = ReminderStore()
    r = add(store, first=NOW - timedelta(seconds=1))
    calls = []

    async def flaky(chat_id, text, *, key, thread_id=None, buttons=()):
        calls.append(key)
        if len(calls) == 1:
            raise ConnectionError("platform down")
        return "m1"

    d = Dispatcher(store, tmp_path / "lock", clock=Clock(1.0, NOW))
    d.channels["t"] = Channel(flaky)
    assert await d.deliver_due() == 0
    assert store.get(r.id).state == "active"
    d._failures.clear()  # the retry delay has passed
    assert await d.deliver_due() == 1
    assert store.get(r.id).state == "done" and len(calls) == 2 and calls[0] == calls[1]


def test_a_file_from_before_follow_ups_gains_their_columns_and_keeps_its_reminders(tmp_path):
    path = tmp_path / "r.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE reminders (id TEXT PRIMARY KEY, person_id TEXT NOT NULL, platform TEXT NOT NULL,"
        " chat_id TEXT NOT NULL, chat_kind TEXT NOT NULL, thread_id TEXT, setter TEXT NOT NULL, what TEXT NOT NULL,"
        " tz TEXT NOT NULL, rule TEXT, dtstart TEXT, every TEXT NOT NULL DEFAULT '', next_due TEXT,"
        " created_at TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'active');"
        "INSERT INTO reminders (id, person_id, platform, chat_id, chat_kind, setter, what, tz, next_due, created_at)"
        " VALUES ('r1', 'p1', 't', 'c1', 'direct', 'u1', 'call mum', 'UTC', '2026-12-04T17:00:00.000000+00:00',"
        " '2026-12-04T16:00:00.000000+00:00');"
    )
    old.close()
    store = ReminderStore(path)
    r = store.get("r1")
    assert (r.what, r.kind, r.is_followup, r.event_key) == ("call mum", "reminder", False, None)
    follow = add(store, kind="followup", event_key="exam|jlpt exam|2026-12-06", event_day="2026-12-06")
    assert store.get(follow.id).is_followup and store.has_event("p1", "exam|jlpt exam|2026-12-06")
