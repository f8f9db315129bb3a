"""Rate limits and failures of Slack's Web API: 429 waits Retry-After, auth errors are reported once."""

from __future__ import annotations

import logging

import pytest
import structlog

from bots.slack import SlackBot, SlackSetupError, run_slack
from tests.channel_fakes import ScriptedAssistant
from tests.slack.slack_support import (
    ANSWER,
    TEAM,
    dm_event,
    event_body,
    mention_event,
    post_signed,
    slack_settings,
)


@pytest.fixture
async def http_bot(tmp_path, fake_slack):
    assistant = ScriptedAssistant(answer="short answer", echo_commands=True, chunk=1, delay=0.0)
    bot = SlackBot(assistant, slack_settings(tmp_path, fake_slack))
    await bot.start()
    yield bot, assistant, f"{bot.endpoints.http_url}/slack/events"
    await bot.stop()


async def test_429_waits_retry_after_then_succeeds(http_bot, fake_slack):
    bot, assistant, url = http_bot
    fake_slack.fail_next("chat.postMessage", status=429, error="ratelimited", headers={"Retry-After": "1"})
    await post_signed(url, event_body(dm_event("hi"), event_id="Ev429"))
    await fake_slack.wait_for(lambda: assistant.consumed.is_set(), timeout=20)
    await bot.drain()
    limited, ok = fake_slack.calls_to("chat.postMessage")
    assert limited.status == 429 and ok.status == 200
    assert ok.at - limited.at >= 1.0  # waited the Retry-After seconds
    (posted,) = fake_slack.posted_in("D1")
    assert posted.text == "short answer"


async def test_server_errors_are_retried_with_backoff(http_bot, fake_slack):
    bot, assistant, url = http_bot
    fake_slack.fail_next("chat.startStream", status=503, error="service_unavailable", times=2)
    await post_signed(url, event_body(mention_event("hi", ts="1700000900.000001"), event_id="Ev503"))
    await fake_slack.wait_for(lambda: assistant.consumed.is_set(), timeout=20)
    await bot.drain()
    statuses = [c.status for c in fake_slack.calls_to("chat.startStream")]
    assert statuses == [503, 503, 200]
    (posted,) = fake_slack.posted_in("C1")
    assert posted.text.strip() == "short answer"


async def test_invalid_auth_is_reported_once_with_what_to_do(http_bot, fake_slack):
    bot, assistant, url = http_bot
    fake_slack.fail_next("chat.postMessage", error="invalid_auth", times=3)
    with structlog.testing.capture_logs() as logs:
        for i in range(3):
            await post_signed(
                url, event_body(dm_event(f"hi {i}", ts=f"1700001000.00000{i}"), event_id=f"EvAuth{i}")
            )
        await fake_slack.wait_for(lambda: len(fake_slack.calls_to("chat.postMessage")) == 3)
        await bot.drain()
    auth = [e for e in logs if e["event"] == "slack.auth_error"]
    assert len(auth) == 1
    assert auth[0]["error"] == "invalid_auth" and auth[0]["team"] == TEAM
    assert "SLACK_BOT_TOKEN" in auth[0]["fix"]
    assert all("hi 0" not in str(e) for e in logs)  # no message text in the logs


async def test_account_inactive_at_start_is_a_clear_setup_error(tmp_path, fake_slack):
    fake_slack.fail_next("auth.test", error="account_inactive")
    bot = SlackBot(
        ScriptedAssistant(answer=ANSWER, echo_commands=True, chunk=1, delay=0.0),
        slack_settings(tmp_path, fake_slack),
    )
    with pytest.raises(SlackSetupError, match="reinstall"):
        await bot.start()


async def test_run_slack_logs_setup_problems_and_returns(tmp_path, fake_slack, caplog):
    settings = slack_settings(tmp_path, fake_slack, slack={"bot_token": "xoxb-wrong"})
    with structlog.testing.capture_logs() as logs:
        await run_slack(
            ScriptedAssistant(answer=ANSWER, echo_commands=True, chunk=1, delay=0.0), settings
        )  # returns instead of raising
    (entry,) = [e for e in logs if e["event"] == "slack.not_started"]
    assert "invalid_auth" in entry["reason"] and "SLACK_BOT_TOKEN" in entry["reason"]
    assert "xoxb-wrong" not in str(logs)
    caplog.set_level(logging.DEBUG)


def test_missing_settings_say_what_to_set(tmp_path, fake_slack):
    with pytest.raises(SlackSetupError, match="SLACK_BOT_TOKEN"):
        SlackBot(
            ScriptedAssistant(answer=ANSWER, echo_commands=True, chunk=1, delay=0.0),
            slack_settings(tmp_path, fake_slack, slack={"bot_token": None}),
        )
    with pytest.raises(SlackSetupError, match="SLACK_SIGNING_SECRET"):
        SlackBot(
            ScriptedAssistant(answer=ANSWER, echo_commands=True, chunk=1, delay=0.0),
            slack_settings(tmp_path, fake_slack, slack={"signing_secret": None}),
        )
