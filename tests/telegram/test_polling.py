"""The real PTB Application, long polling the fake Bot API: who gets an answer, and how."""

from __future__ import annotations

import pytest

from tests.channel_fakes import ScriptedAssistant
from tests.telegram.conftest import running, telegram_settings
from tests.telegram.fake_bot_api import BOT, FakeBotAPI, group_chat, message, private_chat, user


async def test_direct_message_streams_with_drafts_and_finishes_with_one_message(
    fake_api: FakeBotAPI, tmp_path
):
    assistant = ScriptedAssistant()
    ada = user(11, "Ada")
    async with running(assistant, telegram_settings(fake_api, tmp_path)):
        await fake_api.push({"message": message(private_chat(ada), ada, "hello there")})
        await fake_api.wait_for(lambda: fake_api.of("sendMessage", 11))
    assert [m["text"] for m in fake_api.bot_messages(11)] == ["You said: hello there"]
    assert fake_api.of("sendMessageDraft", 11), "direct replies stream as drafts"
    assert not fake_api.of("editMessageText", 11)
    assert fake_api.of("sendChatAction", 11)[0].params["action"] == "typing"
    got = assistant.received[0]
    assert (got.platform, got.chat_id, got.sender_id, got.chat_kind, got.addressed) == (
        "telegram",
        "11",
        "11",
        "direct",
        True,
    )
    assert [c["command"] for c in fake_api.commands][:2] == ["help", "memory"]


async def test_group_answers_only_when_addressed(fake_api: FakeBotAPI, tmp_path):
    assistant = ScriptedAssistant()
    ada, bob = user(11, "Ada"), user(12, "Bob")
    chat = group_chat(-100500)
    bot_user = {k: BOT[k] for k in ("id", "is_bot", "first_name", "username")}
    async with running(assistant, telegram_settings(fake_api, tmp_path)):
        await fake_api.push({"message": message(chat, ada, "lunch at noon?", message_id=1)})
        await fake_api.push(
            {
                "message": message(
                    chat, bob, "@ConfidanteTestBot what's up", message_id=2, mention="@ConfidanteTestBot"
                )
            }
        )
        await fake_api.wait_for(lambda: len(fake_api.bot_messages(-100500)) == 1)
        bot_msg = fake_api.bot_messages(-100500)[0]
        # a reply to the bot's own message is addressed too
        reply = dict(bot_msg, **{"from": bot_user})
        await fake_api.push({"message": message(chat, ada, "thanks!", message_id=3, reply_to=reply)})
        await fake_api.push(
            {
                "message": message(
                    chat, ada, "/memory@ConfidanteTestBot", message_id=4, command="/memory@ConfidanteTestBot"
                )
            }
        )
        await fake_api.push(
            {"message": message(chat, ada, "/memory@OtherBot", message_id=5, command="/memory@OtherBot")}
        )
        await fake_api.push(
            {
                "message": message(
                    chat, bob, "hey Confidante", message_id=6, text_mention=("Confidante", bot_user)
                )
            }
        )
        await fake_api.wait_for(lambda: len(fake_api.bot_messages(-100500)) == 4)
        await fake_api.wait_for(lambda: len(assistant.received) == 5)
    texts = [m["text"] for m in fake_api.bot_messages(-100500)]
    assert texts == [
        "You said: what's up",
        "You said: thanks!",
        "You said: /memory",
        "You said: hey Confidante",
    ]
    by_id = {m.message_id: m for m in assistant.received}
    assert by_id["1"].addressed is False and by_id["1"].chat_kind == "group"
    assert "5" not in by_id, "a command for another bot is not ours"
    assert all(by_id[i].addressed for i in ("2", "3", "4", "6"))
    # group replies quote the message they answer and never use drafts
    first = fake_api.of("sendMessage", -100500)[0]
    assert first.params["reply_parameters"]["message_id"] == 2
    assert not fake_api.of("sendMessageDraft")


async def test_forum_topic_replies_stay_in_the_topic(fake_api: FakeBotAPI, tmp_path):
    assistant = ScriptedAssistant()
    ada = user(11, "Ada")
    chat = group_chat(-100777, forum=True)
    topic_root = {
        "message_id": 40,
        "date": 0,
        "chat": chat,
        "from": ada,
        "forum_topic_created": {"name": "Plans", "icon_color": 7322096},
    }
    async with running(assistant, telegram_settings(fake_api, tmp_path)):
        await fake_api.push(
            {
                "message": message(
                    chat,
                    ada,
                    "@ConfidanteTestBot plan my week",
                    mention="@ConfidanteTestBot",
                    thread_id=40,
                    reply_to=topic_root,
                )
            }
        )
        await fake_api.wait_for(lambda: fake_api.bot_messages(-100777))
    assert assistant.received[0].thread_id == "40"
    assert assistant.received[0].reply_to is None
    for call in fake_api.of("sendMessage", -100777) + fake_api.of("sendChatAction", -100777):
        assert call.params["message_thread_id"] == 40


async def test_same_update_twice_is_handled_once(fake_api: FakeBotAPI, tmp_path):
    assistant = ScriptedAssistant()
    ada = user(11, "Ada")
    update = {"update_id": 5555, "message": message(private_chat(ada), ada, "once please")}
    async with running(assistant, telegram_settings(fake_api, tmp_path)) as channel:
        await fake_api.push(dict(update))
        await fake_api.wait_for(lambda: fake_api.bot_messages(11))
        await fake_api.push(dict(update))  # a redelivery after a restart of the poller
        await fake_api.push({"message": message(private_chat(ada), ada, "second")})
        await fake_api.wait_for(lambda: len(fake_api.bot_messages(11)) == 2)
        assert 5555 in channel.seen
    assert [m.text for m in assistant.received] == ["once please", "second"]


async def test_run_telegram_serves_until_cancelled_then_stops_cleanly(fake_api: FakeBotAPI, tmp_path):
    import asyncio

    from bots.telegram import run_telegram

    assistant = ScriptedAssistant()
    ada = user(11, "Ada")
    task = asyncio.create_task(run_telegram(assistant, telegram_settings(fake_api, tmp_path)))
    await fake_api.wait_for(lambda: fake_api.of("getUpdates"))
    await fake_api.push({"message": message(private_chat(ada), ada, "still there?")})
    await fake_api.wait_for(lambda: fake_api.bot_messages(11))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    polls = len(fake_api.of("getUpdates"))
    await asyncio.sleep(1.5)
    assert len(fake_api.of("getUpdates")) == polls, "polling stopped with the task"


async def test_an_update_is_in_the_inbox_before_the_next_offset_confirms_it(fake_api: FakeBotAPI, tmp_path):
    """python-telegram-bot confirms a batch on its next getUpdates, long before the reply: the
    inbox must hold the message by then (a crash after that point loses nothing)."""
    import asyncio

    class Recording(ScriptedAssistant):
        def __init__(self) -> None:
            super().__init__()
            self.accepted: list[str] = []

        def accept(self, msg) -> None:
            self.accepted.append(msg.text)

        async def handle(self, msg):
            await asyncio.sleep(1.0)
            return await super().handle(msg)

    assistant = Recording()
    ada = user(11, "Ada")
    async with running(assistant, telegram_settings(fake_api, tmp_path)):
        update = await fake_api.push({"message": message(private_chat(ada), ada, "hold on to this")})
        confirmed = await fake_api.wait_for(
            lambda: [
                c for c in fake_api.of("getUpdates") if int(c.params.get("offset") or 0) > update["update_id"]
            ]
        )
        in_inbox, answered_yet = list(assistant.accepted), bool(fake_api.bot_messages(11))
        assert confirmed and not answered_yet  # Telegram forgot it before the answer went out...
        assert in_inbox == ["hold on to this"]  # ...and the inbox had it by then
        await fake_api.wait_for(lambda: fake_api.bot_messages(11))
