"""No message text in the logs at the default level, even when a handler fails: production
logging (app.cli.configure_logging) captured while the real PTB Application, fed by the fake
Bot API, answers a message whose handling raises, and an update that lacks its chat."""

from __future__ import annotations

import logging

import pytest
import structlog

from core.config import Settings
from tests.channel_fakes import ScriptedAssistant
from tests.telegram.conftest import running, telegram_settings
from tests.telegram.fake_bot_api import FakeBotAPI, message, private_chat, user

TEXT = "my bank PIN is LEAKCHECK-4711"
NAME = "Zebulon"


@pytest.fixture(autouse=True)
def _restore_logging():
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def production_logging(settings: Settings) -> None:
    from app.cli import configure_logging

    configure_logging(settings)


class Failing(ScriptedAssistant):
    async def handle(self, msg):
        person_said = msg.text  # a local holding the text: a traceback with locals would print it
        raise RuntimeError(f"recall failed ({len(person_said)} chars)")


async def test_a_failing_handler_logs_its_traceback_without_the_message(
    fake_api: FakeBotAPI, tmp_path, capsys, caplog
):
    caplog.set_level(logging.INFO)
    settings = telegram_settings(fake_api, tmp_path)
    production_logging(settings)
    zeb = user(77, NAME)
    async with running(Failing(), settings):
        await fake_api.push({"message": message(private_chat(zeb), zeb, TEXT)})
        await fake_api.wait_for(lambda: fake_api.bot_messages(77))  # the apology
    logged = capsys.readouterr().err + caplog.text
    assert "telegram.reply_failed" in logged and "Traceback" in logged and "RuntimeError" in logged
    assert TEXT not in logged and "LEAKCHECK" not in logged
    assert NAME not in logged


async def test_an_update_without_chat_is_rejected_naming_the_field(
    fake_api: FakeBotAPI, tmp_path, capsys, caplog
):
    caplog.set_level(logging.INFO)
    settings = telegram_settings(fake_api, tmp_path)
    production_logging(settings)
    assistant = ScriptedAssistant()
    zeb = user(78, NAME)
    broken = message(private_chat(zeb), zeb, TEXT)
    del broken["chat"]
    async with running(assistant, settings):
        await fake_api.push({"message": broken})
        await fake_api.push({"message": message(private_chat(zeb), zeb, "and now a good one")})
        await fake_api.wait_for(lambda: fake_api.bot_messages(78))
    logged = capsys.readouterr().err + caplog.text
    assert "telegram.update_rejected" in logged and "message.chat" in logged
    assert "AttributeError" not in logged and "Traceback" not in logged
    assert TEXT not in logged and NAME not in logged
    assert [m.text for m in assistant.received] == ["and now a good one"]  # the next one still works
