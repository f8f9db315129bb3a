"""A crash loses no message: `confidante run` serving Slack's HTTP Events API (signed events,
each acknowledged with a 200 so Slack will not send it again), SIGKILLed with replies
mid-stream and others queued, restarted on the same data dir; every message gets exactly one
complete answer."""

from __future__ import annotations

import asyncio
import signal
import time

from tests.crash_checks import complete, free_port, inbox_states, stored_replies, until
from tests.crash_runner import kill_group, spawn
from tests.slack.fake_slack import FakeSlack
from tests.slack.slack_support import (
    SIGNING_SECRET,
    TEAM,
    TOKEN,
    dm_event,
    event_body,
    mention_event,
    post_signed,
)


def env(fake: FakeSlack, data_dir, port: int) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "CONFIDANTE_SLACK_API_URL": fake.api_url,
        "CONFIDANTE_SLACK_HTTP_PORT": str(port),
        "CONFIDANTE_SLACK_UPDATE_INTERVAL": "0.2",
        "CONFIDANTE_DATA_DIR": str(data_dir),
        "CONFIDANTE_MAX_NEW_TOKENS": "24",
        "CONFIDANTE_TEMPERATURE": "0",
    }


async def test_sigkill_mid_stream_then_restart_answers_every_message_once(fake_slack: FakeSlack, tmp_path):
    data, log, port = tmp_path / "data", tmp_path / "run.log", free_port()
    url = f"http://127.0.0.1:{port}/slack/events"
    sent: list[dict] = []  # the events: DMs in D<n>, mentions in C1 (each in its own thread)
    bodies: list[dict] = []

    async def post(event: dict) -> None:
        body = event_body(event, event_id=f"Ev{len(sent)}")
        status, _, _ = await post_signed(url, body)
        assert status == 200  # Slack's delivery is done: it will not retry
        sent.append(event)
        bodies.append(body)

    def ts() -> str:
        return f"{time.time():.6f}"

    def keys(events) -> list[tuple[str, str, str]]:
        return [("slack", f"{TEAM}:{e['channel']}", e["ts"]) for e in events]

    def answered(events) -> bool:
        states = inbox_states(data)
        return all(states.get(k) == "answered" for k in keys(events))

    def answers() -> list[list[str]]:
        out = []
        for e in sent:
            if e["channel"].startswith("D"):
                shown = fake_slack.posted_in(e["channel"])
            else:
                shown = [m for m in fake_slack.posted_in(e["channel"]) if m.thread_ts == e["ts"]]
            out.append([m.text for m in shown])
        return out

    proc = spawn(env(fake_slack, data, port), str(log))
    try:
        await until(lambda: fake_slack.calls_to("auth.test"), 120)
        await asyncio.sleep(0.5)  # auth.test comes just before the HTTP port opens
        for i in range(2):
            await post(dm_event(f"Early question {i}?", user=f"U{i}", channel=f"D{i}", ts=ts()))
        await until(lambda: answered(sent), 60)
        for i in range(2, 7):
            await post(dm_event(f"Direct question {i}?", user=f"U{i}", channel=f"D{i}", ts=ts()))
        for i in range(3):  # one person, three threads: answered one after another, so queued
            await post(mention_event(f"thread question {i}?", user="U9", channel="C1", ts=ts()))
        await until(
            lambda: len(fake_slack.calls_to("chat.update")) >= 4 and fake_slack.calls_to("chat.appendStream"),
            60,
        )
        kill_group(proc)
        states = inbox_states(data)
        done_before = sum(1 for k in keys(sent) if states.get(k) == "answered")
        shown_before = sum(1 for texts in answers() if texts)
        assert done_before < len(sent), "the kill came before every answer was out"

        proc = spawn(env(fake_slack, data, port), str(log))
        await until(lambda: answered(sent), 120)
        # an answered message delivered again (Slack retrying an event it thinks failed)
        status, _, _ = await post_signed(url, bodies[0], headers={"X-Slack-Retry-Num": "1"})
        assert status == 200
        await asyncio.sleep(1.5)  # a duplicate would show up here
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0
    finally:
        if proc.poll() is None:
            kill_group(proc)

    after = answers()
    stored = stored_replies(data, "slack")
    print(
        f"\nslack: {len(sent)} messages; before the kill: {done_before} answered, "
        f"{shown_before - done_before} partly shown, {len(sent) - shown_before} not shown; after the "
        f"restart: {sum(1 for t in after if len(t) == 1)} with exactly one answer"
    )
    for event, texts in zip(sent, after, strict=True):
        assert len(texts) == 1, f"message {event['text']!r} has {len(texts)} answers: {texts}"
        reply = stored.get((f"{TEAM}:{event['channel']}", event["ts"]), "")
        assert complete(texts[0], reply), (texts[0], reply)
    late = sum(1 for t in after if t[0].startswith("(Sorry this is late"))
    assert late == len(sent) - done_before
    text = log.read_text()
    for event in sent:
        assert event["text"].split("> ")[-1] not in text
