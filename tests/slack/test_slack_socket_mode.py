"""Socket Mode: bolt's AsyncSocketModeHandler against a local WebSocket speaking Slack's envelopes."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from bots.slack import SlackBot, SlackSetupError
from tests.channel_fakes import ScriptedAssistant
from tests.slack.slack_support import (
    ANSWER,
    APP_TOKEN,
    TEAM,
    dm_event,
    event_body,
    mention_event,
    slack_settings,
)


@pytest.fixture
async def socket_bot(tmp_path, fake_slack):
    assistant = ScriptedAssistant(answer="socket mode answer", delay=0.5, echo_commands=True, chunk=1)
    settings = slack_settings(tmp_path, fake_slack, slack={"app_token": APP_TOKEN, "signing_secret": None})
    bot = SlackBot(assistant, settings)
    await bot.start()
    await fake_slack.wait_socket()
    yield bot, assistant
    await bot.stop()


async def test_socket_mode_connects_without_http_and_acks_events_by_envelope(socket_bot, fake_slack):
    bot, assistant = socket_bot
    assert bot.endpoints.http_url is None  # no public URL needed
    opened = fake_slack.calls_to("apps.connections.open")
    assert opened and all(c.token == APP_TOKEN for c in opened)
    sent_at = time.monotonic()
    envelope = await fake_slack.send_envelope(event_body(dm_event("over the socket"), event_id="EvS1"))
    await fake_slack.wait_for(lambda: envelope in fake_slack.acks)
    ack_after = fake_slack.acks[envelope] - sent_at
    assert ack_after < 1.0
    assert not assistant.consumed.is_set()  # generation (3 x 0.5 s) still running after the ack
    await fake_slack.wait_for(lambda: assistant.consumed.is_set())
    await bot.drain()
    (msg,) = assistant.received
    assert msg.sender_id == f"{TEAM}:U1" and msg.text == "over the socket"
    (posted,) = fake_slack.posted_in("D1")
    assert posted.text == "socket mode answer"


async def test_socket_mode_retry_envelope_is_acked_and_dropped(socket_bot, fake_slack):
    bot, assistant = socket_bot
    body = event_body(mention_event("hello", ts="1700000800.000001"), event_id="EvS2")
    first = await fake_slack.send_envelope(body)
    retry = await fake_slack.send_envelope(body, retry_attempt=1)
    await fake_slack.wait_for(lambda: first in fake_slack.acks and retry in fake_slack.acks)
    await fake_slack.wait_for(lambda: assistant.consumed.is_set())
    await asyncio.sleep(0.2)
    await bot.drain()
    assert len(assistant.received) == 1
    assert len(fake_slack.calls_to("chat.startStream")) == 1


async def test_slash_command_over_socket_is_acked_and_answered_privately(socket_bot, fake_slack):
    bot, assistant = socket_bot
    payload = {
        "token": "x",
        "team_id": TEAM,
        "team_domain": "test",
        "channel_id": "C1",
        "channel_name": "general",
        "user_id": "U1",
        "user_name": "ann",
        "command": "/confidante",
        "text": "forget-me",
        "api_app_id": "A0TEST",
        "response_url": fake_slack.response_url(),
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
    }
    envelope = await fake_slack.send_envelope(payload, kind="slash_commands")
    await fake_slack.wait_for(lambda: envelope in fake_slack.acks)
    (answer,) = await fake_slack.wait_for(lambda: fake_slack.calls_to("response_url"))
    (msg,) = assistant.received
    assert msg.text == "/forget_me" and msg.sender_id == f"{TEAM}:U1"
    assert answer.args["response_type"] == "ephemeral"
    assert "command /forget_me" in answer.args["text"]
    assert not fake_slack.posted_in("C1")  # nothing said in the channel itself


async def test_socket_mode_with_oauth_serves_install_pages_but_no_http_events(tmp_path, fake_slack):
    settings = slack_settings(
        tmp_path,
        fake_slack,
        slack={
            "app_token": APP_TOKEN,
            "signing_secret": None,
            "bot_token": None,
            "client_id": "1.2",
            "client_secret": "s",
        },
    )
    assistant = ScriptedAssistant(answer=ANSWER, echo_commands=True, chunk=1, delay=0.0)
    bot = SlackBot(assistant, settings)
    await bot.start()
    try:
        await fake_slack.wait_socket()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{bot.endpoints.http_url}/slack/install") as resp:
                assert resp.status == 200
                assert "slack.com/oauth/v2/authorize" in await resp.text()
            async with session.post(
                f"{bot.endpoints.http_url}/slack/events", json=event_body(dm_event("sneaky"), event_id="EvX")
            ) as resp:
                assert resp.status == 401
        await bot.drain()
        assert assistant.received == []
    finally:
        await bot.stop()


async def test_run_slack_serves_until_cancelled_then_closes_the_socket(tmp_path, fake_slack):
    from bots.slack import run_slack

    assistant = ScriptedAssistant(answer="from run_slack", echo_commands=True, chunk=1, delay=0.0)
    settings = slack_settings(tmp_path, fake_slack, slack={"app_token": APP_TOKEN, "signing_secret": None})
    task = asyncio.create_task(run_slack(assistant, settings))
    await fake_slack.wait_socket()
    envelope = await fake_slack.send_envelope(event_body(dm_event("hi"), event_id="EvRun"))
    await fake_slack.wait_for(lambda: envelope in fake_slack.acks and assistant.consumed.is_set())
    await fake_slack.wait_for(lambda: any(m.text == "from run_slack" for m in fake_slack.posted_in("D1")))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake_slack.wait_for(lambda: not fake_slack._sockets, timeout=10)


async def test_a_rejected_app_token_is_a_setup_error_that_says_what_to_do(tmp_path, fake_slack):
    settings = slack_settings(tmp_path, fake_slack, slack={"app_token": "xapp-wrong", "signing_secret": None})
    bot = SlackBot(ScriptedAssistant(answer=ANSWER, echo_commands=True, chunk=1, delay=0.0), settings)
    with pytest.raises(SlackSetupError, match="connections:write"):
        await bot.start()
    await bot.stop()
