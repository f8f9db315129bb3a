"""Exactly once across SIGKILLs: `confidante run` (tests/crash_runner.py: the real CLI, the
embedded worker, the reminder store) kills itself just before and, on the next run, just after
sending a due reminder; the third run on the same data dir leaves it delivered once, with the
late note. Slack finds a message sent before a kill by its metadata (Matrix's transaction-id
dedup is tested against Synapse in tests/matrix/test_matrix_reminders.py; Telegram can't be
asked, see core/reminders/dispatch.py)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sqlite3
import time
from datetime import UTC, datetime

from tests.crash_checks import free_port, until
from tests.crash_runner import kill_group, spawn
from tests.slack.fake_slack import FakeSlack
from tests.slack.slack_support import SIGNING_SECRET, TOKEN, dm_event, event_body, post_signed


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


async def test_slack_reminder_exactly_once_across_sigkills_before_and_after_sending(
    fake_slack: FakeSlack, tmp_path
):
    """Run 1 dies just before sending, run 2 (delivering late) just after; run 3 finds the
    message run 2 sent and only records it."""
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

    proc = spawn({**env, "CONFIDANTE_REMINDER_CRASH_POINT": "before"}, str(log))
    try:
        await until(lambda: fake_slack.calls_to("auth.test"), 120)
        await asyncio.sleep(0.5)
        body = event_body(
            dm_event("remind me in 1 minute to call mum", ts=f"{time.time():.6f}"), event_id="Ev1"
        )
        status, _, _ = await post_signed(f"http://127.0.0.1:{port}/slack/events", body)
        assert status == 200
        await until(lambda: any("I'll remind you" in m.text for m in fake_slack.posted_in("D1")), 60)
        await asyncio.to_thread(reap, proc)  # it SIGKILLs itself at the due time, before sending
        assert reminders() == []
        assert deliveries(data) == [("claimed", 1)]

        proc = spawn({**env, "CONFIDANTE_REMINDER_CRASH_POINT": "after"}, str(log))
        await asyncio.to_thread(reap, proc)  # sends it (late), then SIGKILLs itself before recording
        assert len(reminders()) == 1
        assert deliveries(data) == [("claimed", 2)]

        proc = spawn(env, str(log))
        await until(lambda: deliveries(data) == [("sent", 3)], 120)
        await asyncio.sleep(1.5)  # a duplicate would show up here
    finally:
        await stop(proc)
    assert len(reminders()) == 1, reminders()
    assert re.fullmatch(r"⏰ Reminder: call mum \(late: I was offline at \d\d:\d\d\)", reminders()[0])
    assert "call mum" not in log.read_text()  # reminder text never reaches the log
