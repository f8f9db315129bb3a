"""Reminders through the real PTB Application and the fake Bot API, with the real Assistant
(LanceDB, the reminder store's SQLite file): set in chat, delivered on time, listed, cancelled,
recurring, and delivered late after the bot was down over the due time."""

from __future__ import annotations

import asyncio
import time

import pytest

from core.assistant import build_assistant
from core.llm.engine import Engine
from tests.reminders.conftest import clock_at, real_time_of
from tests.telegram.conftest import running, telegram_settings
from tests.telegram.fake_bot_api import FakeBotAPI, group_chat, message, private_chat, user

ADA, BOB = user(31, "Ada"), user(32, "Bob")
GROUP = group_chat(-100777, "Runners")


@pytest.fixture
def make(tiny_model):
    built = []

    def build(settings):
        engine = Engine(tiny_model, settings)
        assistant = build_assistant(settings, engine=engine)
        built.append((assistant, engine))
        return assistant

    yield build
    for assistant, engine in built:
        assistant.close()
        engine.close()


async def say(api: FakeBotAPI, chat, who, text: str, **kw) -> None:
    await api.push({"message": message(chat, who, text, **kw)})


def texts(api: FakeBotAPI, chat_id: int) -> list[str]:
    return [m.get("text", "") for m in api.bot_messages(chat_id)]


async def wait_text(
    api: FakeBotAPI, chat_id: int, needle: str, timeout: float = 20.0, count: int = 1
) -> float:
    """Wait until `needle` is in `count` bot messages; returns the real time it got there."""
    try:
        await api.wait_for(lambda: sum(needle in t for t in texts(api, chat_id)) >= count, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"waited for {needle!r} x{count}; the chat shows {texts(api, chat_id)}") from exc
    return time.time()


async def test_a_reminder_set_in_chat_arrives_within_seconds_of_its_time(fake_api, tmp_path, make):
    settings = telegram_settings(fake_api, tmp_path / "data", **clock_at("2026-12-04 17:59:56"))
    async with running(make(settings), settings):
        await say(fake_api, private_chat(ADA), ADA, "remind me to call mum at 6")
        await wait_text(fake_api, ADA["id"], "I'll remind you")
        confirmed = texts(fake_api, ADA["id"])[0]
        assert confirmed.startswith("I'll remind you on Fri 4 Dec at 18:00 (Europe/Berlin): call mum")
        arrived = await wait_text(fake_api, ADA["id"], "⏰ Reminder: call mum")
        due = real_time_of(settings, "2026-12-04 18:00:00")
        assert 0 <= arrived - due < 5, f"arrived {arrived - due:.2f} s after its time"
        await asyncio.sleep(1.0)
        reminders = [t for t in texts(fake_api, ADA["id"]) if t.startswith("⏰")]
        assert reminders == ["⏰ Reminder: call mum"]  # once, and not marked late

        # its snooze button sets it again, 10 minutes on
        shown = next(m for m in fake_api.bot_messages(ADA["id"]) if m.get("text", "").startswith("⏰"))
        labels = [b["text"] for b in shown["reply_markup"]["inline_keyboard"][0]]
        assert labels == ["Snooze 10 min", "1 hour", "Tomorrow"]
        button = shown["reply_markup"]["inline_keyboard"][0][0]
        query = {
            "id": "q-1",
            "from": ADA,
            "chat_instance": "x",
            "message": shown,
            "data": button["callback_data"],
        }
        await fake_api.push({"callback_query": query})
        await wait_text(fake_api, ADA["id"], "Snoozed: I'll remind you again on Fri 4 Dec at 18:10")
        await say(fake_api, private_chat(ADA), ADA, "/reminders", command="/reminders")
        await wait_text(fake_api, ADA["id"], "1. call mum — Fri 4 Dec at 18:10")


async def ask(api: FakeBotAPI, chat, who, text: str, expect: str, **kw) -> str:
    """Send one message and wait for the answer containing `expect` (one at a time: in order)."""
    before = sum(expect in t for t in texts(api, chat["id"]))
    await say(api, chat, who, text, **kw)
    await wait_text(api, chat["id"], expect, count=before + 1)
    return [t for t in texts(api, chat["id"]) if expect in t][-1]


async def test_list_cancel_and_recall(fake_api, tmp_path, make):
    settings = telegram_settings(fake_api, tmp_path / "data", **clock_at("2026-12-04 17:59:52"))
    chat = private_chat(ADA)
    async with running(make(settings), settings):
        await ask(fake_api, chat, ADA, "remind me at 18:00 to water the plants", "I'll remind you")
        await ask(fake_api, chat, ADA, "remind me at 18:00 to feed the cat", "I'll remind you")
        listing = await ask(fake_api, chat, ADA, "/reminders", "Your reminders:", command="/reminders")
        assert "1. water the plants — Fri 4 Dec at 18:00" in listing
        assert "2. feed the cat — Fri 4 Dec at 18:00" in listing
        await ask(
            fake_api, chat, ADA, "/reminders cancel 1", "Cancelled: water the plants", command="/reminders"
        )
        recalled = await ask(fake_api, chat, ADA, "what did I ask you to remind me about?", "You asked me")
        assert "feed the cat" in recalled and "water the plants" not in recalled
        await ask(fake_api, chat, ADA, "/reminders cancel 7", "There is no reminder 7", command="/reminders")
        await wait_text(fake_api, ADA["id"], "⏰ Reminder: feed the cat")
        await asyncio.sleep(1.5)
        assert not any("water the plants" in t for t in texts(fake_api, ADA["id"]) if t.startswith("⏰"))


async def test_in_a_group_only_the_setter_can_cancel(fake_api, tmp_path, make):
    settings = telegram_settings(fake_api, tmp_path / "data", **clock_at("2026-12-04 12:00:00"))
    mention = "@ConfidanteTestBot"
    async with running(make(settings), settings):
        await say(fake_api, GROUP, ADA, f"{mention} remind me at 18:00 to book the track", mention=mention)
        await wait_text(fake_api, GROUP["id"], "I'll remind you")
        await say(fake_api, GROUP, BOB, "/reminders cancel 1", command="/reminders")
        await wait_text(fake_api, GROUP["id"], "Only the person who set that reminder")
        await say(fake_api, GROUP, ADA, "/reminders cancel 1", command="/reminders")
        await wait_text(fake_api, GROUP["id"], "Cancelled: book the track")


async def test_a_recurring_reminder_fires_three_times_on_a_fast_clock(fake_api, tmp_path, make):
    # a day passes every 2 s: 08:00 on three mornings within ~6 s
    settings = telegram_settings(
        fake_api,
        tmp_path / "data",
        reminder_late_seconds=3600,
        **clock_at("2026-12-04 07:58:00", speed=43_200),
    )
    async with running(make(settings), settings):
        await say(fake_api, private_chat(ADA), ADA, "remind me every day at 8 to take vitamins")
        await wait_text(fake_api, ADA["id"], "⏰ Reminder: take vitamins", count=3, timeout=30)
        await say(fake_api, private_chat(ADA), ADA, "/reminders", command="/reminders")
        await wait_text(fake_api, ADA["id"], "Your reminders:")
        assert "every day at 08:00" in next(
            t for t in texts(fake_api, ADA["id"]) if t.startswith("Your reminders")
        )


async def test_after_the_bot_was_down_over_the_due_time_it_arrives_late_with_a_note(fake_api, tmp_path, make):
    settings = telegram_settings(fake_api, tmp_path / "data", **clock_at("2026-12-04 17:59:57"))
    async with running(make(settings), settings):
        await say(fake_api, private_chat(ADA), ADA, "remind me to call mum at 6")
        await wait_text(fake_api, ADA["id"], "I'll remind you")
    await asyncio.sleep(4.0)  # down over 18:00
    assert not any(t.startswith("⏰") for t in texts(fake_api, ADA["id"]))
    async with running(make(settings), settings):  # a new process on the same data dir
        await wait_text(fake_api, ADA["id"], "⏰ Reminder: call mum")
        await asyncio.sleep(1.0)
    late = [t for t in texts(fake_api, ADA["id"]) if t.startswith("⏰")]
    assert late == ["⏰ Reminder: call mum (late: I was offline at 18:00)"]


async def test_timezone_command_whoami_and_a_bad_zone(fake_api, tmp_path, make):
    settings = telegram_settings(fake_api, tmp_path / "data", **clock_at("2026-12-04 12:00:00", "UTC"))
    chat = private_chat(BOB)
    async with running(make(settings), settings):
        await say(fake_api, chat, BOB, "/timezone Mars/Olympus", command="/timezone")
        await wait_text(fake_api, BOB["id"], "I don't know the time zone")
        await say(fake_api, chat, BOB, "/timezone America/New_York", command="/timezone")
        await wait_text(fake_api, BOB["id"], "Your time zone is now America/New_York")
        await say(fake_api, chat, BOB, "/whoami", command="/whoami")
        await wait_text(fake_api, BOB["id"], "Time zone: America/New_York")
        await say(fake_api, chat, BOB, "remind me tomorrow at 9 to run")
        await wait_text(fake_api, BOB["id"], "I'll remind you on Sat 5 Dec at 09:00 (America/New_York): run")
        await say(fake_api, chat, BOB, "remind me to run sometime")
        await wait_text(fake_api, BOB["id"], "I couldn't tell when")


async def test_a_chat_that_blocked_the_bot_stops_its_reminders(fake_api, tmp_path, make):
    settings = telegram_settings(fake_api, tmp_path / "data", **clock_at("2026-12-04 17:59:57"))
    assistant = make(settings)
    async with running(assistant, settings):
        await say(fake_api, private_chat(ADA), ADA, "remind me every day at 18:00 to stretch")
        await wait_text(fake_api, ADA["id"], "I'll remind you")
        fake_api.fail("sendMessage", 403, "Forbidden: bot was blocked by the user", times=1)
        await fake_api.wait_for(
            lambda: (
                not assistant.reminders.store.active_of(
                    assistant.reminders.store.get(
                        assistant.reminders.store._db.execute("SELECT id FROM reminders").fetchone()[0]
                    ).person_id
                )
            ),
            timeout=10,
        )
    stopped = assistant.reminders.store._db.execute("SELECT state FROM reminders").fetchall()
    assert stopped == [("undeliverable",)]
