"""Follow-ups end to end through the real PTB Application and the fake Bot API: opt in, say a
dated thing, the worker's consolidation task (run in-process on the same data dir) proposes
a check-in, and the bot's dispatcher delivers it once at its time. Someone who did not opt
in and a group get nothing; two loops checked in on the same day are one message that day;
forgetting the message a follow-up came from cancels it."""

from __future__ import annotations

import asyncio

import pytest

from core.assistant import build_assistant
from core.llm.engine import Engine
from tests.reminders.conftest import clock_at, real_time_of
from tests.reminders.test_telegram import ask, say, texts, wait_text
from tests.telegram.conftest import running, telegram_settings
from tests.telegram.fake_bot_api import group_chat, private_chat, user

ADA, BOB = user(41, "Ada"), user(42, "Bob")
GROUP = group_chat(-100888, "Study group")
MENTION = "@ConfidanteTestBot"


@pytest.fixture
def worker(monkeypatch):
    """The worker's tasks module bound to the test's settings (what a worker process reads)."""
    from workers import tasks
    from workers.app import app

    def bind(settings):
        monkeypatch.setattr(app, "confidante_settings", settings, raising=False)
        tasks.store.cache_clear()
        tasks.reminder_store.cache_clear()
        tasks.extractor.cache_clear()
        return tasks

    yield bind
    for cached in (tasks.store, tasks.reminder_store):
        if cached.cache_info().currsize:
            cached().close()
        cached.cache_clear()


def _settings(fake_api, data, local: str):
    return telegram_settings(
        fake_api,
        data,
        extractor="rules",
        adapter_auto_refresh=False,
        reminder_poll_seconds=0.5,
        max_new_tokens=4,
        **clock_at(local),
    )


async def test_an_opted_in_person_gets_one_check_in_at_its_time(fake_api, tmp_path, tiny_model, worker):
    # Saturday noon in Berlin: "on Sunday" -> a check-in at 19:00 tonight. The bot then restarts
    # on the same data dir with its clock two seconds before 19:00 (the afternoon skipped).
    settings = _settings(fake_api, tmp_path / "data", "2026-12-05 12:00:00")
    tasks = worker(settings)
    engine = Engine(tiny_model, settings)
    assistant = build_assistant(settings, engine=engine)
    try:
        async with running(assistant, settings):
            ada, bob = private_chat(ADA), private_chat(BOB)
            await ask(fake_api, ada, ADA, "/followups on", "Follow-ups are on", command="/followups")
            await ask(fake_api, ada, ADA, "/whoami", "Follow-ups: on", command="/whoami")
            await say(fake_api, ada, ADA, "My JLPT exam is on Sunday. I also have a job interview on Sunday.")
            await fake_api.wait_for(lambda: len(fake_api.bot_messages(ADA["id"])) >= 3, timeout=30)
            await say(fake_api, ada, ADA, "And I fly to Lisbon on the 20th.")
            await say(fake_api, bob, BOB, "My driving test is on Sunday")  # Bob never opted in
            await say(fake_api, GROUP, ADA, f"{MENTION} my chemistry exam is on Sunday", mention=MENTION)
            await ask(fake_api, GROUP, ADA, "/followups on", "only for direct chats", command="/followups")
            await fake_api.wait_for(lambda: len(fake_api.bot_messages(BOB["id"])) >= 1, timeout=30)
            await fake_api.wait_for(lambda: len(fake_api.bot_messages(ADA["id"])) >= 4, timeout=30)
            await asyncio.to_thread(assistant.store.settle)

            people = {
                name: assistant.store.person_for("telegram", str(who["id"]))
                for name, who in (("ada", ADA), ("bob", BOB))
            }
            for person_id in people.values():  # what the worker's consolidate task does
                await asyncio.to_thread(tasks.consolidate, person_id)
            pending = assistant.reminders.store.active_of(people["ada"])
            assert sorted(r.what.split(" — ")[0] for r in pending) == [
                "You're off to Lisbon on Sunday 20 Dec",
                "Your JLPT exam is on Sunday 6 Dec",
                "Your job interview is on Sunday 6 Dec",
            ]
            assert assistant.reminders.store.active_of(people["bob"]) == []

            listing = await ask(fake_api, ada, ADA, "/reminders", "Your reminders:", command="/reminders")
            assert "(follow-up) You're off to Lisbon on Sunday 20 Dec" in listing
            # forgetting the message it came from cancels its follow-up
            await ask(fake_api, ada, ADA, "/forget Lisbon", "Forgotten", command="/forget")
            left = assistant.reminders.store.active_of(people["ada"])
            assert len(left) == 2 and not any("Lisbon" in r.what for r in left)
            # the same event said again is still one follow-up
            await say(fake_api, ada, ADA, "Ugh, my JLPT exam is on Sunday!")
            await fake_api.wait_for(lambda: len(fake_api.bot_messages(ADA["id"])) >= 7, timeout=30)
            await asyncio.to_thread(assistant.store.settle)
            await asyncio.to_thread(tasks.store().catch_up)  # the purge: a worker retries, we wait
            await asyncio.to_thread(tasks.consolidate, people["ada"])
            assert len(assistant.reminders.store.active_of(people["ada"])) == 2
    finally:
        assistant.close()
        engine.close()

    evening = _settings(fake_api, tmp_path / "data", "2026-12-05 18:59:58")
    engine = Engine(tiny_model, evening)
    assistant = build_assistant(evening, engine=engine)
    try:
        async with running(assistant, evening):
            arrived = await wait_text(fake_api, ADA["id"], "💬 ", timeout=20)
            due = real_time_of(evening, "2026-12-05 19:00:00")
            assert 0 <= arrived - due < 5, f"arrived {arrived - due:.2f} s after its time"
            await asyncio.sleep(1.5)
            checkins = [t for t in texts(fake_api, ADA["id"]) if t.startswith("💬 ")]
            assert len(checkins) == 1, checkins  # two check-ins due this evening: one message
            assert checkins[0].split(" — ")[0] in (
                "💬 Your JLPT exam is on Sunday 6 Dec",
                "💬 Your job interview is on Sunday 6 Dec",
            )
            assert checkins[0].endswith("\n(A follow-up I offered: /followups off stops them.)")
            shown = next(m for m in fake_api.bot_messages(ADA["id"]) if m.get("text", "").startswith("💬 "))
            assert [b["text"] for b in shown["reply_markup"]["inline_keyboard"][0]] == ["Stop follow-ups"]
            assert not any(t.startswith("💬 ") for t in texts(fake_api, BOB["id"]))
            assert not any(t.startswith("💬 ") for t in texts(fake_api, GROUP["id"]))
            off = await ask(
                fake_api, private_chat(ADA), ADA, "/followups off", "Follow-ups are off", command="/followups"
            )
            assert off == "Follow-ups are off."  # nothing left: the other one's next day is the exam's own
    finally:
        assistant.close()
        engine.close()
