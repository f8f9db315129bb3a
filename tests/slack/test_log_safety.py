"""No message text in the logs at the default level, even when a handler fails: production
logging captured while the real bolt app, fed signed events over HTTP, answers a message whose
handling raises, and an event that lacks its user."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import structlog

from bots.slack import SlackBot
from tests.channel_fakes import ScriptedAssistant
from tests.slack.fake_slack import FakeSlack
from tests.slack.slack_support import ANSWER, dm_event, event_body, post_signed, slack_settings

TEXT = "my bank PIN is LEAKCHECK-4711"
NAME = "Zebulon Quist"


@pytest.fixture(autouse=True)
def _restore_logging():
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


class Failing(ScriptedAssistant):
    async def handle(self, msg):
        person_said = msg.text  # a local holding the text: a traceback with locals would print it
        raise RuntimeError(f"recall failed ({len(person_said)} chars)")


async def serve(assistant, settings):
    from app.cli import configure_logging

    configure_logging(settings)
    bot = SlackBot(assistant, settings)
    await bot.start()
    return bot, f"{bot.endpoints.http_url}/slack/events"


def event(text: str, **extra) -> dict:
    return dm_event(text, ts=f"{time.time():.6f}", user_profile={"real_name": NAME, "name": "zeb"}, **extra)


async def test_a_failing_handler_logs_its_traceback_without_the_message(
    fake_slack: FakeSlack, tmp_path, capsys, caplog
):
    caplog.set_level(logging.INFO)
    bot, url = await serve(Failing(), slack_settings(tmp_path, fake_slack))
    try:
        status, _, _ = await post_signed(url, event_body(event(TEXT)))
        assert status == 200
        await fake_slack.wait_for(lambda: fake_slack.posted_in("D1"))  # the apology
        await bot.drain()
    finally:
        await bot.stop()
    logged = capsys.readouterr().err + caplog.text
    assert "slack.reply_failed" in logged and "Traceback" in logged and "RuntimeError" in logged
    assert TEXT not in logged and "LEAKCHECK" not in logged and NAME not in logged


async def test_an_event_without_user_is_rejected_naming_the_field(
    fake_slack: FakeSlack, tmp_path, capsys, caplog
):
    caplog.set_level(logging.INFO)
    assistant = ScriptedAssistant(answer=ANSWER, echo_commands=True, chunk=1, delay=0.0)
    bot, url = await serve(assistant, slack_settings(tmp_path, fake_slack))
    try:
        broken = event(TEXT)
        del broken["user"]
        status, _, _ = await post_signed(url, event_body(broken, event_id="EvBroken"))
        assert status == 200  # acknowledged (Slack would retry an error), and dropped
        status, _, _ = await post_signed(url, event_body(event("and now a good one"), event_id="EvGood"))
        await fake_slack.wait_for(lambda: fake_slack.posted_in("D1"))
        await bot.drain()
        await asyncio.sleep(0.1)
    finally:
        await bot.stop()
    logged = capsys.readouterr().err + caplog.text
    assert "slack.event_rejected" in logged and "event.user" in logged
    assert "AttributeError" not in logged and "Traceback" not in logged
    assert TEXT not in logged and NAME not in logged
    assert [m.text for m in assistant.received] == ["and now a good one"]
