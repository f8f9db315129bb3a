"""A lost connection loses no answer, without a restart: `confidante run` polling the fake Bot
API, which answers every call with 502 Bad Gateway (Telegram's own answer when it is down) while
a reply is streaming; the reply and the apology both fail, the process keeps running, and once
the API is back the message is answered exactly once, with the late note (core/recovery.py)."""

from __future__ import annotations

import signal

from tests.crash_checks import complete, inbox_states, stored_replies
from tests.crash_runner import kill_group, spawn
from tests.telegram.fake_bot_api import FakeBotAPI, message, private_chat, user
from tests.telegram.test_crash import env

ADA = user(610, "Ada")
BEN = user(611, "Ben")
DOWN = ("getUpdates", "sendMessage", "sendMessageDraft", "editMessageText", "sendChatAction")


async def test_a_reply_cut_by_a_lost_connection_is_answered_once_after_it_comes_back(
    fake_api: FakeBotAPI, tmp_path
):
    data, log = tmp_path / "data", tmp_path / "run.log"
    settings = {
        **env(fake_api, data),
        "CONFIDANTE_RECOVERY_INTERVAL_SECONDS": "1",
        "CONFIDANTE_RECOVERY_AFTER_SECONDS": "2",
        "CRASH_DELTA_DELAY": "0.1",
        "CONFIDANTE_OPS_PORT": "0",
        "CONFIDANTE_WORKER_DRAIN_SECONDS": "5",
    }
    proc = spawn(settings, str(log))
    try:
        await fake_api.wait_for(lambda: fake_api.of("getUpdates"), timeout=120)
        asked = await fake_api.push({"message": message(private_chat(ADA), ADA, "Tell me about tides?")})
        key = ("telegram", str(ADA["id"]), str(asked["message"]["message_id"]))
        await fake_api.wait_for(lambda: inbox_states(data).get(key) == "replying", timeout=60)
        for method in DOWN:  # the connection is gone
            fake_api.fail(method, 502, "Bad Gateway", times=5000)
        failed = lambda: sum(1 for c in fake_api.of("sendMessage") if c.status == 502)  # noqa: E731
        # the reply's last write and the apology, five tries each, all fail
        await fake_api.wait_for(lambda: failed() >= 10, timeout=90)
        assert inbox_states(data)[key] != "answered"
        assert not fake_api.bot_messages(ADA["id"])
        fake_api._failures.clear()  # back
        await fake_api.wait_for(lambda: inbox_states(data).get(key) == "answered", timeout=20)
        # the channel works as before for new messages
        await fake_api.push({"message": message(private_chat(BEN), BEN, "Hello?")})
        await fake_api.wait_for(lambda: fake_api.bot_messages(BEN["id"]), timeout=60)
        assert proc.poll() is None, "no restart: the same process answered"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            kill_group(proc)
    shown = [m.get("text", "") for m in fake_api.bot_messages(ADA["id"])]
    stored = stored_replies(data, "telegram")[(key[1], key[2])]
    assert len(shown) == 1, shown
    assert shown[0].startswith("(Sorry this is late") and complete(shown[0], stored)
    assert "Tell me about tides" not in log.read_text()
