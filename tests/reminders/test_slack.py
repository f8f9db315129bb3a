"""Reminders through signed Slack events to the real bolt app and the real Assistant: the
person's zone comes from Slack's users.info, the reminder arrives in their DM on time, once."""

from __future__ import annotations

import asyncio
import time

import pytest

from bots.slack import SlackBot
from core.assistant import build_assistant
from core.llm.engine import Engine
from tests.reminders.conftest import clock_at, real_time_of
from tests.slack.fake_slack import FakeSlack
from tests.slack.slack_support import dm_event, event_body, post_signed, slack_settings


@pytest.fixture
async def slack_bot(tmp_path, fake_slack: FakeSlack, tiny_model):
    # the test clock reads 17:59:55 in New York now; the person's Slack profile says New York
    clock = {**clock_at("2026-12-04 17:59:55", "America/New_York"), "default_timezone": "UTC"}
    settings = slack_settings(tmp_path, fake_slack, **clock)
    fake_slack.user_tz["U1"] = "America/New_York"
    engine = Engine(tiny_model, settings)
    assistant = build_assistant(settings, engine=engine)
    bot = SlackBot(assistant, settings)
    await bot.start()
    yield bot, assistant, settings, f"{bot.endpoints.http_url}/slack/events"
    await bot.stop()
    assistant.close()
    engine.close()


async def test_slack_reminder_uses_the_profile_zone_and_arrives_on_time(slack_bot, fake_slack: FakeSlack):
    bot, assistant, settings, url = slack_bot

    async def say(text: str, n: int) -> None:
        body = event_body(dm_event(text, ts=f"{time.time():.6f}"), event_id=f"Ev{n}")
        status, _, _ = await post_signed(url, body)
        assert status == 200

    def shown() -> list[str]:
        return [m.text for m in fake_slack.posted_in("D1")]

    await say("remind me at 6pm to call mum", 1)
    await fake_slack.wait_for(lambda: any("I'll remind you" in t for t in shown()), 30)
    assert "I'll remind you on Fri 4 Dec at 18:00 (America/New_York): call mum" in shown()
    await fake_slack.wait_for(lambda: "⏰ Reminder: call mum" in shown(), 30)
    late = time.time() - real_time_of(settings, "2026-12-04 18:00:00", "America/New_York")
    assert 0 <= late < 5, late
    await say("/whoami", 2)
    await fake_slack.wait_for(lambda: any("Time zone: America/New_York" in t for t in shown()), 30)
    await asyncio.sleep(0.5)
    assert shown().count("⏰ Reminder: call mum") == 1
    posted = [c for c in fake_slack.calls_to("chat.postMessage") if "⏰" in str(c.args.get("text"))]
    assert len(posted) == 1 and "confidante_reminder" in str(posted[0].args.get("metadata"))
