"""No message text in the logs at the default level, even when a handler fails: production
logging captured while the Matrix channel reads a sync response (nio's own parsing) holding an
event without a sender and a message whose handling raises. No homeserver is needed: the sync
is handed to the client as it arrives off the wire, and every send fails to connect."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest
import structlog
from nio import SyncResponse

from bots.matrix import MatrixBot
from bots.settings import ChannelSettings
from tests.channel_fakes import ScriptedAssistant

TEXT = "my bank PIN is LEAKCHECK-4711"
NAME = "Zebulon Quist"
BOT, ZEB, ROOM = "@confidante:test.local", "@zeb:test.local", "!room:test.local"


@pytest.fixture(autouse=True)
def _restore_logging():
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


class Failing(ScriptedAssistant):
    async def handle(self, msg):
        person_said = msg.text  # a local holding the text: a traceback with locals would print it
        raise RuntimeError(f"recall failed ({len(person_said)} chars)")


def member(user_id: str, name: str) -> dict:
    return {
        "type": "m.room.member",
        "state_key": user_id,
        "sender": user_id,
        "event_id": f"$m-{name}",
        "origin_server_ts": int(time.time() * 1000),
        "content": {"membership": "join", "displayname": name},
    }


def text_event(event_id: str, body: str, *, sender: str | None = ZEB) -> dict:
    event = {
        "type": "m.room.message",
        "event_id": event_id,
        "origin_server_ts": int(time.time() * 1000),
        "content": {"msgtype": "m.text", "body": body},
    }
    if sender is not None:
        event["sender"] = sender
    return event


async def test_a_bad_event_and_a_failing_handler_log_no_text_or_name(tmp_path, capsys, caplog):
    from app.cli import configure_logging

    caplog.set_level(logging.INFO)
    settings = ChannelSettings(
        data_dir=tmp_path / "data",
        matrix={
            "homeserver": "http://127.0.0.1:9",  # nothing listens: every send fails
            "user_id": BOT,
            "backoff_max_seconds": 0.1,
        },
    )
    configure_logging(settings)
    bot = MatrixBot(Failing(), settings)
    bot.client.restore_login(BOT, "DEVICE", "syt_not_a_real_token")
    bot.outbox.give_up_after = 0.3
    bot.listen()
    sync = {
        "next_batch": "s1",
        "rooms": {
            "join": {
                ROOM: {
                    "state": {"events": [member(BOT, "Confidante"), member(ZEB, NAME)]},
                    "timeline": {
                        "events": [
                            text_event("$broken", TEXT, sender=None),
                            text_event("$good", TEXT),
                        ],
                        "limited": False,
                    },
                }
            }
        },
    }
    try:
        await bot.client.receive_response(SyncResponse.from_dict(sync))
        await asyncio.wait_for(asyncio.gather(*bot._tasks), 30)
    finally:
        await bot.client.close()
    logged = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().err + caplog.text)
    rejected = [line for line in logged.splitlines() if "matrix.event_rejected" in line]
    assert any(re.search(r'missing(=|": ")sender', line) for line in rejected), logged[-2000:]
    assert "matrix.reply_failed" in logged and "RuntimeError" in logged  # the handler did fail
    assert "AttributeError" not in logged
    assert TEXT not in logged and "LEAKCHECK" not in logged and NAME not in logged
