"""Exactly once across a SIGKILL: `confidante run` (tests/crash_runner.py: the real CLI, the
embedded worker, the reminder store) kills itself just before or just after sending a due
reminder, and a restart on the same data dir delivers it once, with the late note.

Slack finds a message sent just before the kill by its metadata; Telegram can't be asked,
so only the kill before sending is exactly-once there (see core/reminders/dispatch.py)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sqlite3
import time
from datetime import UTC, datetime

import pytest

from tests.crash_checks import free_port, until
from tests.crash_runner import kill_group, spawn
from tests.slack.fake_slack import FakeSlack
from tests.slack.slack_support import SIGNING_SECRET, TOKEN, dm_event, event_body, post_signed
from tests.telegram.fake_bot_api import TOKEN as TG_TOKEN
from tests.telegram.fake_bot_api import FakeBotAPI, message, private_chat, user


def clock_env(data_dir) -> dict[str, str]:
    # ten times real speed: "in 1 minute" is due 6 s after it is set
    return {
        "CONFIDANTE_DATA_DIR": str(data_dir),
        "CONFIDANTE_REMINDER_CLOCK_SPEED": "10",
        "CONFIDANTE_REMINDER_CLOCK_ORIGIN": "2026-12-04T16:00:00+00:00",
        "CONFIDANTE_REMINDER_CLOCK_ANCHOR": datetime.now(UTC).isoformat(),
        "CONFIDANTE_DEFAULT_TIMEZONE": "Europe/Berlin",
        "CONFIDANTE_MAX_NEW_TOKENS": "8",
    }


def deliveries(data_dir) -> list[tuple[str, int]]:
    db = sqlite3.connect(data_dir / "reminders.sqlite3")
    try:
        return db.execute("SELECT state, attempts FROM deliveries").fetchall()
    finally:
        db.close()


async def stop(proc) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(proc.wait, 60)
    if proc.poll() is None:
        kill_group(proc)


def reap(proc) -> None:
    """The run killed itself; its embedded worker follows it (PR_SET_PDEATHSIG); make sure."""
    proc.wait(timeout=60)
    with contextlib.suppress(ProcessLookupError):
        kill_group(proc)


@pytest.mark.parametrize("point", ["before", "after"])
async def test_slack_reminder_exactly_once_across_a_sigkill(fake_slack: FakeSlack, tmp_path, point: str):
    data, log, port = tmp_path / "data", tmp_path / "run.log", free_port()
    env = {
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "CONFIDANTE_SLACK_API_URL": fake_slack.api_url,
        "CONFIDANTE_SLACK_HTTP_PORT": str(port),
        **clock_env(data),
    }

    def reminders() -> list[str]:
        return [m.text for m in fake_slack.posted_in("D1") if m.text.startswith("⏰")]

    proc = spawn({**env, "CONFIDANTE_REMINDER_CRASH_POINT": point}, str(log))
    try:
        await until(lambda: fake_slack.calls_to("auth.test"), 120)
        await asyncio.sleep(0.5)
        body = event_body(
            dm_event("remind me in 1 minute to call mum", ts=f"{time.time():.6f}"), event_id="Ev1"
        )
        status, _, _ = await post_signed(f"http://127.0.0.1:{port}/slack/events", body)
        assert status == 200
        await until(lambda: any("I'll remind you" in m.text for m in fake_slack.posted_in("D1")), 60)
        await asyncio.to_thread(reap, proc)  # it SIGKILLs itself at the due time
        assert len(reminders()) == (1 if point == "after" else 0)
        assert deliveries(data) == [("claimed", 1)]

        proc = spawn(env, str(log))
        await until(lambda: reminders() and deliveries(data) == [("sent", 2)], 120)
        await asyncio.sleep(1.5)  # a duplicate would show up here
    finally:
        await stop(proc)
    assert len(reminders()) == 1, reminders()
    if point == "before":
        assert re.fullmatch(r"⏰ Reminder: call mum \(late: I was offline at \d\d:\d\d\)", reminders()[0])
    assert "call mum" not in log.read_text()  # reminder text never reaches the log


async def test_telegram_reminder_exactly_once_after_a_sigkill_before_sending(fake_api: FakeBotAPI, tmp_path):
    data, log = tmp_path / "data", tmp_path / "run.log"
    ada = user(41, "Ada")
    env = {
        "TELEGRAM_BOT_TOKEN": TG_TOKEN,
        "CONFIDANTE_TELEGRAM_API_URL": fake_api.base_url,
        **clock_env(data),
    }
    env["CONFIDANTE_TELEGRAM_POLL_TIMEOUT"] = "1"

    def reminders() -> list[str]:
        return [
            m.get("text", "") for m in fake_api.bot_messages(ada["id"]) if m.get("text", "").startswith("⏰")
        ]

    proc = spawn({**env, "CONFIDANTE_REMINDER_CRASH_POINT": "before"}, str(log))
    try:
        await until(lambda: fake_api.of("getUpdates"), 120)
        await fake_api.push({"message": message(private_chat(ada), ada, "remind me in 1 minute to call mum")})
        await until(
            lambda: any("I'll remind you" in m.get("text", "") for m in fake_api.bot_messages(ada["id"])), 60
        )
        await asyncio.to_thread(reap, proc)
        assert reminders() == []
        proc = spawn(env, str(log))
        await until(lambda: reminders() and deliveries(data) == [("sent", 2)], 120)
        await asyncio.sleep(1.5)
    finally:
        await stop(proc)
    assert len(reminders()) == 1, reminders()
    assert re.fullmatch(r"⏰ Reminder: call mum \(late: I was offline at \d\d:\d\d\)", reminders()[0])
