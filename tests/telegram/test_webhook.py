"""Webhook mode: the app serves its own endpoint and checks Telegram's secret token header."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest

from bots.telegram import TelegramChannel, TelegramConfigError
from tests.channel_fakes import ScriptedAssistant
from tests.telegram.conftest import running, telegram_settings
from tests.telegram.fake_bot_api import FakeBotAPI, message, private_chat, user

SECRET = "s3cret_token-for-tests"
ADA = user(11, "Ada")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def webhook_settings(fake_api: FakeBotAPI, tmp_path, port: int, **kw):
    return telegram_settings(
        fake_api,
        tmp_path,
        **kw,
        telegram={
            "webhook_url": "https://bot.example.org/telegram/hook",
            "webhook_secret": SECRET,
            "webhook_listen": "127.0.0.1",
            "webhook_port": port,
        },
    )


async def test_webhook_checks_the_secret_and_handles_each_update_once(fake_api: FakeBotAPI, tmp_path):
    assistant = ScriptedAssistant()
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    update = {"update_id": 9001, "message": message(private_chat(ADA), ADA, "via webhook")}
    body = json.dumps(update)
    async with running(assistant, webhook_settings(fake_api, tmp_path, port)), httpx.AsyncClient() as http:
        registered = fake_api.of("setWebhook")[0].params
        assert registered["url"] == "https://bot.example.org/telegram/hook"
        assert registered["secret_token"] == SECRET
        assert "message" in registered["allowed_updates"]
        assert not fake_api.of("getUpdates"), "no polling in webhook mode"

        json_type = {"Content-Type": "application/json"}
        missing = await http.post(url, content=body, headers=json_type)
        wrong = await http.post(
            url, content=body, headers={**json_type, "X-Telegram-Bot-Api-Secret-Token": "nope"}
        )
        assert (missing.status_code, wrong.status_code) == (401, 401)
        assert "X-Telegram-Bot-Api-Secret-Token" in missing.json()["description"]
        await asyncio.sleep(0.3)
        assert assistant.received == [], "nothing processed without the right secret"

        good = {**json_type, "X-Telegram-Bot-Api-Secret-Token": SECRET}
        assert (await http.post(url, content="{not json", headers=good)).status_code == 400
        assert (await http.post(url, content='{"no_update_id": 1}', headers=good)).status_code == 400
        assert (
            await http.post(url, content='{"update_id": 5, "message": {"chat": 3}}', headers=good)
        ).status_code == 400

        first = await http.post(url, content=body, headers=good)
        again = await http.post(url, content=body, headers=good)  # Telegram retrying a slow answer
        assert (first.status_code, again.status_code) == (200, 200)
        await fake_api.wait_for(lambda: fake_api.bot_messages(11))
        await asyncio.sleep(0.3)
    assert [m.text for m in assistant.received] == ["via webhook"]
    assert [m["text"] for m in fake_api.bot_messages(11)] == ["You said: via webhook"]


async def test_a_secret_telegram_would_refuse_is_a_clear_error(fake_api: FakeBotAPI, tmp_path):
    settings = telegram_settings(
        fake_api,
        tmp_path,
        telegram={"webhook_url": "https://bot.example.org/hook", "webhook_secret": "has spaces!"},
    )
    channel = TelegramChannel(ScriptedAssistant(), settings)
    with pytest.raises(TelegramConfigError, match="A-Z, a-z, 0-9, _ and -"):
        await channel.start()
    await channel.stop()


async def test_a_wrong_token_says_what_to_do(fake_api: FakeBotAPI, tmp_path):
    settings = telegram_settings(fake_api, tmp_path, telegram={"bot_token": "999:wrong"})
    channel = TelegramChannel(ScriptedAssistant(), settings)
    with pytest.raises(TelegramConfigError, match="BotFather"):
        await channel.start()
