"""The HTTP Events API path: signed requests posted to the real bolt app served by aiohttp."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from bots.slack import SlackBot
from tests.channel_fakes import ScriptedAssistant
from tests.slack.slack_support import (
    ANSWER,
    BOT_USER,
    TEAM,
    dm_event,
    event_body,
    mention_event,
    post_signed,
    slack_settings,
)


@pytest.fixture
async def http_bot(tmp_path, fake_slack):
    assistant = ScriptedAssistant(answer=ANSWER, echo_commands=True, chunk=1, delay=0.0)
    bot = SlackBot(assistant, slack_settings(tmp_path, fake_slack))
    await bot.start()
    yield bot, assistant, f"{bot.endpoints.http_url}/slack/events"
    await bot.stop()


async def test_url_verification_answers_the_challenge(http_bot):
    _, assistant, url = http_bot
    status, text, _ = await post_signed(
        url,
        {
            "token": "x",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification",
        },
    )
    assert status == 200
    assert "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" in text
    assert assistant.received == []


@pytest.mark.parametrize(
    "case",
    ["wrong_secret", "stale_timestamp", "future_timestamp", "no_signature", "no_timestamp", "tampered_body"],
)
async def test_bad_signatures_are_rejected_and_nothing_is_processed(http_bot, fake_slack, case):
    bot, assistant, url = http_bot
    body = event_body(dm_event("secret stuff"), event_id=f"Ev-{case}")
    kwargs: dict = {}
    if case == "wrong_secret":
        kwargs["secret"] = "not-the-secret"
    elif case == "stale_timestamp":
        kwargs["timestamp"] = int(time.time()) - 5 * 60 - 5
    elif case == "future_timestamp":
        kwargs["timestamp"] = int(time.time()) + 5 * 60 + 5
    elif case == "no_signature":
        kwargs["headers"] = {"X-Slack-Signature": ""}
    elif case == "no_timestamp":
        kwargs["headers"] = {"X-Slack-Request-Timestamp": ""}
    if case == "tampered_body":
        import aiohttp

        from tests.slack.slack_support import sign

        good = json.dumps(body).encode()
        ts = int(time.time())
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                url,
                data=good.replace(b"secret stuff", b"other stuff!"),
                headers={
                    "Content-Type": "application/json",
                    "X-Slack-Request-Timestamp": str(ts),
                    "X-Slack-Signature": sign(good, ts),
                },
            ) as resp,
        ):
            status = resp.status
    else:
        status, _, _ = await post_signed(url, body, **kwargs)
    assert status == 401
    await asyncio.sleep(0.2)
    await bot.drain()
    assert assistant.received == []
    assert [c.method for c in fake_slack.calls if c.method != "auth.test"] == []


async def test_malformed_body_gets_a_clear_error_and_nothing_runs(http_bot, fake_slack):
    bot, assistant, url = http_bot
    status, _, _ = await post_signed(url, "{not json", content_type="application/json")
    assert status in (400, 404)
    await bot.drain()
    assert assistant.received == []


async def test_dm_is_answered_in_the_dm_with_the_team_in_ids(http_bot, fake_slack):
    bot, assistant, url = http_bot
    status, _, _ = await post_signed(url, event_body(dm_event("hi &amp; hello <@U2>")))
    assert status == 200
    await fake_slack.wait_for(lambda: assistant.consumed.is_set())
    await bot.drain()
    (msg,) = assistant.received
    assert msg.sender_id == f"{TEAM}:U1"
    assert msg.chat_id == f"{TEAM}:D1"
    assert msg.chat_kind == "direct" and msg.addressed
    assert msg.text == "hi & hello @U2"
    assert msg.thread_id is None
    # a top-level DM reply: one message posted then edited (no thread to stream into)
    (posted,) = fake_slack.posted_in("D1")
    assert posted.thread_ts is None
    assert posted.text == "Hello *there* &amp; &lt;you&gt;"
    assert fake_slack.calls_to("chat.startStream") == []


async def test_app_mention_is_streamed_in_its_thread(http_bot, fake_slack):
    bot, assistant, url = http_bot
    await post_signed(url, event_body(mention_event("what's up?", ts="1700000200.000200"), event_id="Ev2"))
    await fake_slack.wait_for(lambda: assistant.consumed.is_set())
    await bot.drain()
    (msg,) = assistant.received
    assert msg.chat_kind == "group" and msg.addressed
    assert msg.text == "what's up?"
    assert msg.thread_id == "1700000200.000200"
    (start,) = fake_slack.calls_to("chat.startStream")
    assert start.args["thread_ts"] == "1700000200.000200"
    assert start.args["recipient_user_id"] == "U1" and start.args["recipient_team_id"] == TEAM
    status_calls = fake_slack.calls_to("assistant.threads.setStatus")
    assert status_calls and status_calls[0].args["status"] == "is thinking…"
    assert status_calls[0].at < start.at
    (reply,) = fake_slack.posted_in("C1")
    assert not reply.streaming
    assert reply.text.strip() == "Hello **there** &amp; &lt;you&gt;"


async def test_thread_replies_reach_the_assistant_only_where_it_takes_part(http_bot, fake_slack):
    bot, assistant, url = http_bot
    await post_signed(url, event_body(mention_event("start", ts="1700000300.000001"), event_id="Ev3"))
    await fake_slack.wait_for(lambda: assistant.consumed.is_set())
    await bot.drain()
    in_thread = {
        "type": "message",
        "channel": "C1",
        "user": "U1",
        "text": "and more",
        "ts": "1700000300.000009",
        "thread_ts": "1700000300.000001",
        "channel_type": "channel",
    }
    elsewhere = dict(in_thread, ts="1700000400.000002", thread_ts="1700000400.000001", text="not for you")
    plain = {
        "type": "message",
        "channel": "C1",
        "user": "U2",
        "text": "chit chat",
        "ts": "1700000500.000001",
        "channel_type": "channel",
    }
    for i, ev in enumerate([in_thread, elsewhere, plain]):
        await post_signed(url, event_body(ev, event_id=f"Ev3-{i}"))
    await asyncio.sleep(0.3)
    await bot.drain()
    by_text = {m.text: m for m in assistant.received}
    assert by_text["and more"].addressed and by_text["and more"].thread_id == "1700000300.000001"
    assert not by_text["not for you"].addressed
    assert not by_text["chit chat"].addressed and by_text["chit chat"].chat_kind == "group"
    # only the two addressed messages produced replies
    assert len(fake_slack.calls_to("chat.startStream")) == 2


@pytest.mark.parametrize(
    "event",
    [
        {
            "type": "message",
            "channel": "D1",
            "user": BOT_USER,
            "text": "my own echo",
            "ts": "1.1",
            "channel_type": "im",
        },
        {
            "type": "message",
            "subtype": "bot_message",
            "channel": "D1",
            "bot_id": "B999",
            "text": "other bot",
            "ts": "1.2",
            "channel_type": "im",
        },
        {
            "type": "message",
            "channel": "D1",
            "user": "U9",
            "bot_id": "B998",
            "text": "bot with user",
            "ts": "1.3",
            "channel_type": "im",
        },
        {
            "type": "message",
            "subtype": "channel_join",
            "channel": "C1",
            "user": "U1",
            "text": "joined",
            "ts": "1.4",
            "channel_type": "channel",
        },
    ],
    ids=["own", "bot_message", "bot_with_user", "join"],
)
async def test_bot_and_system_messages_are_ignored(http_bot, fake_slack, event):
    bot, assistant, url = http_bot
    status, _, _ = await post_signed(url, event_body(event, event_id="Ev-ignored"))
    assert status == 200
    await asyncio.sleep(0.2)
    await bot.drain()
    assert assistant.received == []
    assert not fake_slack.calls_to("chat.postMessage") and not fake_slack.calls_to("chat.startStream")


async def test_mention_also_delivered_as_message_is_handled_once(http_bot, fake_slack):
    bot, assistant, url = http_bot
    ev = mention_event("hello", ts="1700000600.000001")
    as_message = dict(ev, type="message", channel_type="channel")
    await post_signed(url, event_body(as_message, event_id="Ev-m1"))
    await post_signed(url, event_body(ev, event_id="Ev-m2"))
    await fake_slack.wait_for(lambda: assistant.consumed.is_set())
    await bot.drain()
    assert [m.addressed for m in assistant.received] == [True]


async def test_retried_delivery_is_handled_once(http_bot, fake_slack):
    bot, assistant, url = http_bot
    body = event_body(dm_event("once please", ts="1700000700.000001"), event_id="EvRetry")
    first, _, _ = await post_signed(url, body)
    second, _, _ = await post_signed(
        url, body, headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    )
    third, _, _ = await post_signed(
        url, body, headers={"X-Slack-Retry-Num": "2", "X-Slack-Retry-Reason": "http_timeout"}
    )
    assert (first, second, third) == (200, 200, 200)
    await fake_slack.wait_for(lambda: assistant.consumed.is_set())
    await asyncio.sleep(0.2)
    await bot.drain()
    assert len(assistant.received) == 1
    assert len(fake_slack.calls_to("chat.postMessage")) == 1


async def test_ack_comes_before_a_slow_generation_ends(tmp_path, fake_slack):
    assistant = ScriptedAssistant(
        answer="one two three four", delay=1.0, echo_commands=True, chunk=1
    )  # ~4 s of "generation"
    bot = SlackBot(assistant, slack_settings(tmp_path, fake_slack))
    await bot.start()
    try:
        url = f"{bot.endpoints.http_url}/slack/events"
        status, _, seconds = await post_signed(url, event_body(dm_event("slow?"), event_id="EvSlow"))
        assert status == 200
        assert seconds < 1.5  # Slack needs the ack within 3 s; it came long before the answer
        assert not assistant.consumed.is_set()
        await fake_slack.wait_for(lambda: assistant.consumed.is_set(), timeout=20)
        await bot.drain()
        (posted,) = fake_slack.posted_in("D1")
        assert posted.text.startswith("one two three four")
        assert posted.updates >= 2  # shown while it was written, not only at the end
    finally:
        await bot.stop()


async def test_deleted_message_is_redacted_and_edits_are_passed_as_edits(http_bot, fake_slack):
    bot, assistant, url = http_bot
    deleted = {
        "type": "message",
        "subtype": "message_deleted",
        "channel": "D1",
        "ts": "1.9",
        "deleted_ts": "1.5",
        "previous_message": {"type": "message", "user": "U1", "text": "oops", "ts": "1.5"},
        "channel_type": "im",
    }
    edited = {
        "type": "message",
        "subtype": "message_changed",
        "channel": "D1",
        "ts": "1.10",
        "channel_type": "im",
        "message": {"type": "message", "user": "U1", "text": "new text", "ts": "1.6"},
        "previous_message": {"type": "message", "user": "U1", "text": "old text", "ts": "1.6"},
    }
    await post_signed(url, event_body(deleted, event_id="EvDel"))
    await post_signed(url, event_body(edited, event_id="EvEdit"))
    await asyncio.sleep(0.2)
    await bot.drain()
    assert assistant.redacted == [("slack", f"{TEAM}:D1", "1.5")]
    (msg,) = assistant.received
    assert msg.edited and msg.text == "new text" and msg.message_id == "1.6"
    assert not fake_slack.calls_to("chat.postMessage")


async def test_removed_from_channel_closes_the_chat(http_bot, fake_slack):
    bot, assistant, url = http_bot
    await post_signed(
        url, event_body({"type": "channel_left", "channel": "C9", "actor_id": "U1"}, event_id="EvLeft")
    )
    await asyncio.sleep(0.2)
    await bot.drain()
    assert assistant.closed == [("slack", f"{TEAM}:C9")]


async def test_workspace_without_streaming_falls_back_to_chat_update_in_the_thread(http_bot, fake_slack):
    bot, assistant, url = http_bot
    fake_slack.stream_enabled = False
    await post_signed(url, event_body(mention_event("one", ts="1700002000.000001"), event_id="EvNS1"))
    await fake_slack.wait_for(lambda: assistant.consumed.is_set())
    await bot.drain()
    assistant.consumed.clear()
    await post_signed(url, event_body(mention_event("two", ts="1700002000.000002"), event_id="EvNS2"))
    await fake_slack.wait_for(lambda: assistant.consumed.is_set())
    await bot.drain()
    assert len(fake_slack.calls_to("chat.startStream")) == 1  # refused once, then not tried again
    replies = fake_slack.posted_in("C1")
    assert [r.thread_ts for r in replies] == ["1700002000.000001", "1700002000.000002"]
    assert all(r.text == "Hello *there* &amp; &lt;you&gt;" for r in replies)


async def test_a_very_long_reply_is_split_below_slacks_limits(tmp_path, fake_slack):
    long_answer = " ".join(f"word{i} & <x>" for i in range(2500))  # ~35,000 characters escaped
    for mode, event in (
        ("update", dm_event("long", ts="1700003000.000001")),
        ("auto", mention_event("long", ts="1700003000.000002")),
    ):
        assistant = ScriptedAssistant(answer=long_answer, echo_commands=True, chunk=1, delay=0.0)
        bot = SlackBot(assistant, slack_settings(tmp_path, fake_slack, slack={"stream_mode": mode}))
        await bot.start()
        try:
            await post_signed(
                f"{bot.endpoints.http_url}/slack/events", event_body(event, event_id=f"EvLong{mode}")
            )
            await fake_slack.wait_for(lambda a=assistant: a.consumed.is_set(), timeout=60)
            await bot.drain()
        finally:
            await bot.stop()
    dm_parts = fake_slack.posted_in("D1")
    assert len(dm_parts) > 1 and all(len(m.text) <= 3000 for m in dm_parts)
    assert all(c.error is None for c in fake_slack.calls)  # the fake enforces Slack's limits
    words = " ".join(m.text for m in dm_parts).split()
    assert words[0] == "word0" and words[-1] == "&lt;x&gt;" and "word2499" in words
    streamed = fake_slack.posted_in("C1")
    assert len(streamed) >= 2  # one streamed message holds up to 30,000 characters
    assert all(len(m.text) < 40_000 and m.thread_ts == "1700003000.000002" for m in streamed)
    said = [w for m in streamed for w in m.text.split() if w.startswith("word")]
    assert said == [f"word{i}" for i in range(2500)]


async def test_a_message_is_in_the_inbox_before_slack_gets_its_200(tmp_path, fake_slack):
    """Bolt acknowledges before the listener runs; the inbox must already hold the message."""
    at_ack: list[list[str]] = []

    class Recording(ScriptedAssistant):
        def __init__(self) -> None:
            super().__init__(answer=ANSWER, echo_commands=True, chunk=1, delay=0.0)
            self.accepted: list[str] = []

        def accept(self, msg) -> None:
            self.accepted.append(msg.text)

        async def handle(self, msg):
            await asyncio.sleep(0.5)  # the answer comes well after the ack
            return await super().handle(msg)

    assistant = Recording()
    bot = SlackBot(assistant, slack_settings(tmp_path, fake_slack))
    await bot.start()
    try:
        url = f"{bot.endpoints.http_url}/slack/events"
        status, _, _ = await post_signed(url, event_body(dm_event("keep me safe"), event_id="EvInbox"))
        at_ack.append(list(assistant.accepted))
        assert status == 200 and assistant.received == []  # acknowledged, not answered yet
        await bot.drain()
    finally:
        await bot.stop()
    assert at_ack == [["keep me safe"]]
