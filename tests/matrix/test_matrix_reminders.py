"""Reminders in Matrix against a real Synapse: set in a direct room, sent into it on time with
the bot's own snooze reactions on it, snoozed by the person tapping one; and a reminder sent
again by a restarted process (killed after sending, before recording) is the same event,
because its transaction id comes from the occurrence id."""

from __future__ import annotations

import asyncio
import time

import pytest
from nio import ReactionEvent, RoomMessageText

from bots.matrix_send import send_first
from tests.matrix.matrix_helpers import bot_settings, content, start_bot, unique
from tests.reminders.conftest import clock_at, real_time_of

pytestmark = pytest.mark.synapse


def bot_bodies(person, bot_id: str, room_id: str) -> list[str]:
    return [
        content(e).get("body", "")
        for e in person.from_user(bot_id, room_id)
        if isinstance(e, RoomMessageText)
    ]


async def test_a_reminder_set_in_a_matrix_room_arrives_on_time(
    synapse, people, bots, tmp_path, real_assistant
):
    alice = await people("alice")
    account = synapse.register(unique("confidante"))
    settings = bot_settings(synapse, account, tmp_path / "data", **clock_at("2026-12-04 17:59:52"))
    assistant = real_assistant(settings)
    await start_bot(assistant, settings, bots)
    room = await alice.create_room([account.user_id], direct=True)
    await alice.wait_for(lambda r, e: r == room and getattr(e, "sender", "") == account.user_id, what="intro")
    await alice.say(room, "remind me to call mum at 6")
    await alice.wait_for(
        lambda r, e: (
            r == room and content(e).get("body", "").startswith("I'll remind you on Fri 4 Dec at 18:00")
        ),
        what="confirmation",
    )
    shown = await alice.wait_for(
        lambda r, e: r == room and content(e).get("body", "").startswith("⏰ Reminder: call mum"),
        timeout=30,
        what="reminder",
    )
    late = time.time() - real_time_of(settings, "2026-12-04 18:00:00")
    assert late < 5 + 0.5, f"seen {late:.2f} s after its time (includes the person's sync)"
    assert content(shown)["body"] == (
        "⏰ Reminder: call mum\nReact with 💤 snooze 10 min, 🕐 1 hour, 📅 tomorrow."
    )
    # the bot put the three reactions on its own message for the person to tap
    await alice.wait_for(
        lambda r, e: isinstance(e, ReactionEvent) and e.reacts_to == shown.event_id and e.key == "📅",
        what="the bot's reactions",
    )
    own = {
        e.key
        for e in alice.from_user(account.user_id, room)
        if isinstance(e, ReactionEvent) and e.reacts_to == shown.event_id
    }
    assert own == {"💤", "🕐", "📅"}
    await alice.no_event(lambda r, e: content(e).get("body", "").startswith("⏰"), 1.0)
    assert sum(b.startswith("⏰") for b in bot_bodies(alice, account.user_id, room)) == 1

    # alice taps 💤: snoozed 10 minutes; a reaction of her own that means nothing does nothing
    await alice.client.room_send(
        room,
        "m.reaction",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": shown.event_id, "key": "👍"}},
    )
    await alice.client.room_send(
        room,
        "m.reaction",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": shown.event_id, "key": "💤"}},
    )
    snoozed = await alice.wait_for(
        lambda r, e: r == room and content(e).get("body", "").startswith("Snoozed:"), what="snoozed"
    )
    assert content(snoozed)["body"].startswith("Snoozed: I'll remind you again on Fri 4 Dec at 18:1")
    await alice.no_event(lambda r, e: content(e).get("body", "").startswith("Snoozed:"), 1.0)
    store = assistant.reminders.store
    pending = store._db.execute("SELECT what, next_due FROM reminders WHERE state = 'active'").fetchall()
    assert [w for w, _ in pending] == ["call mum"]  # the snoozed one, once


async def test_sending_an_occurrence_again_after_a_restart_is_the_same_event(
    synapse, people, bots, tmp_path, real_assistant
):
    alice = await people("alice")
    account = synapse.register(unique("confidante"))
    settings = bot_settings(synapse, account, tmp_path / "data")
    bot = await start_bot(real_assistant(settings), settings, bots)
    room = await alice.create_room([account.user_id], direct=True)
    await alice.wait_for(lambda r, e: r == room and getattr(e, "sender", "") == account.user_id, what="intro")

    deadline = time.monotonic() + 10
    while room not in bot.client.rooms and time.monotonic() < deadline:  # the bot's sync saw the join
        await asyncio.sleep(0.1)

    async def gone(room_id: str) -> None:
        raise AssertionError("the room is there")

    key = "abc123@2026-12-04T17:00:00+00:00"
    first = await send_first(bot.outbox, gone, room, "⏰ Reminder: call mum", key=key)
    await bot.stop()
    bot2 = await start_bot(real_assistant(settings), settings, bots)  # the same device, a new process
    assert bot2.client.device_id == bot.client.device_id
    deadline = time.monotonic() + 10
    while room not in bot2.client.rooms and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    again = await send_first(bot2.outbox, gone, room, "⏰ Reminder: call mum", key=key)
    assert again == first
    await alice.wait_for(
        lambda r, e: r == room and content(e).get("body", "").startswith("⏰"), what="reminder"
    )
    await alice.no_event(lambda r, e: content(e).get("body", "").startswith("⏰"), 1.5)
    assert [b for b in bot_bodies(alice, account.user_id, room) if b.startswith("⏰")] == [
        "⏰ Reminder: call mum"
    ]
