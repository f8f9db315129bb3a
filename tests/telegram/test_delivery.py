"""How replies reach Telegram: long ones split, refused formatting, flood control, errors, 403."""

from __future__ import annotations

import asyncio

from core.messages import Button, Document, Reply
from tests.channel_fakes import ScriptedAssistant, chunks
from tests.telegram.conftest import running, telegram_settings
from tests.telegram.fake_bot_api import FakeBotAPI, group_chat, message, private_chat, user

ADA = user(11, "Ada")
GROUP = group_chat(-100900)


def long_reply(n_paragraphs: int = 40) -> str:
    paras = [
        f"Paragraph {i}: " + " ".join(f"word{i}_{j}" for j in range(30)) + "." for i in range(n_paragraphs)
    ]
    return "\n\n".join(paras)


def ask(text: str, chat=None, **kw):
    chat = chat or private_chat(ADA)
    if chat["type"] != "private":
        kw.setdefault("mention", "@ConfidanteTestBot")
        text = f"@ConfidanteTestBot {text}"
    return {"message": message(chat, ADA, text, **kw)}


async def test_ten_thousand_characters_arrive_as_several_messages_in_order(fake_api: FakeBotAPI, tmp_path):
    text = long_reply()
    assert 10_000 <= len(text) <= 12_000
    assistant = ScriptedAssistant(reply=lambda m: Reply(stream=chunks(text, size=400, delay=0.01)))
    async with running(assistant, telegram_settings(fake_api, tmp_path)):
        await fake_api.push(ask("write a lot", GROUP))
        await fake_api.push(ask("write a lot"))
        await fake_api.wait_for(
            lambda: len(fake_api.bot_messages(-100900)) >= 3 and len(fake_api.bot_messages(11)) >= 3
        )
        await asyncio.sleep(0.5)
    for chat_id in (-100900, 11):
        shown = [m["text"] for m in fake_api.bot_messages(chat_id)]
        assert len(shown) == 3
        assert all(len(t) <= 4096 for t in shown)
        assert " ".join(shown).split() == text.split()  # every word, in order, none cut
        assert all(t.rstrip().endswith(".") for t in shown), "cut at paragraph boundaries"
    # drafts never carry more than one message's worth
    for call in fake_api.of("sendMessageDraft", 11):
        assert len(call.params["text"]) <= 4096


async def test_refused_formatting_is_sent_again_as_plain_text(fake_api: FakeBotAPI, tmp_path):
    text = "Here is **bold** and a `snippet`."
    assistant = ScriptedAssistant(reply=lambda m: Reply(text=text))
    fake_api.fail(
        "sendMessage",
        400,
        "Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"b\"",
    )
    async with running(assistant, telegram_settings(fake_api, tmp_path)):
        await fake_api.push(ask("format something"))
        await fake_api.wait_for(lambda: fake_api.bot_messages(11))
    first, second = fake_api.of("sendMessage", 11)
    assert first.status == 400 and first.params["parse_mode"] == "HTML"
    assert "parse_mode" not in second.params
    assert fake_api.bot_messages(11)[0]["text"] == text


async def test_retry_after_is_waited_out_then_sent(fake_api: FakeBotAPI, tmp_path):
    assistant = ScriptedAssistant(reply=lambda m: Reply(text="after the flood"))
    fake_api.fail("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    async with running(assistant, telegram_settings(fake_api, tmp_path)):
        await fake_api.push(ask("hi"))
        await fake_api.wait_for(lambda: fake_api.bot_messages(11))
    refused, sent = fake_api.of("sendMessage", 11)
    assert refused.status == 429 and sent.status == 200
    assert sent.at - refused.at >= 1.0, "waited the time Telegram asked"
    assert [m["text"] for m in fake_api.bot_messages(11)] == ["after the flood"]


async def test_network_errors_retry_with_backoff(fake_api: FakeBotAPI, tmp_path):
    assistant = ScriptedAssistant(reply=lambda m: Reply(text="eventually"))
    fake_api.fail("sendMessage", 502, "Bad Gateway", times=2)
    async with running(assistant, telegram_settings(fake_api, tmp_path)):
        await fake_api.push(ask("hi"))
        await fake_api.wait_for(lambda: fake_api.bot_messages(11))
    calls = fake_api.of("sendMessage", 11)
    assert [c.status for c in calls] == [502, 502, 200]
    assert calls[1].at - calls[0].at >= 0.3, "backed off before retrying"
    assert len(fake_api.bot_messages(11)) == 1


async def test_blocked_bot_marks_the_chat_inactive_once(fake_api: FakeBotAPI, tmp_path):
    assistant = ScriptedAssistant()
    fake_api.blocked.add(11)
    async with running(assistant, telegram_settings(fake_api, tmp_path)) as channel:
        await fake_api.push(ask("are you there"))
        await fake_api.wait_for(lambda: assistant.closed)
        await asyncio.sleep(0.3)
        assert 11 in channel.inactive
    assert assistant.closed == [("telegram", "11")]
    sends = fake_api.of("sendMessage", 11) + fake_api.of("sendMessageDraft", 11)
    assert len(sends) == 1 and sends[0].status == 403, "a 403 is never retried"


async def test_kicked_from_group_closes_the_chat(fake_api: FakeBotAPI, tmp_path):
    assistant = ScriptedAssistant()
    bot = {"id": 7000001, "is_bot": True, "first_name": "Confidante", "username": "ConfidanteTestBot"}
    change = {
        "chat": GROUP,
        "from": ADA,
        "date": 0,
        "old_chat_member": {"status": "member", "user": bot},
        "new_chat_member": {"status": "kicked", "user": bot, "until_date": 0},
    }
    async with running(assistant, telegram_settings(fake_api, tmp_path)):
        await fake_api.push({"my_chat_member": change})
        await fake_api.wait_for(lambda: assistant.closed)
    assert assistant.closed == [("telegram", "-100900")]


async def test_group_reply_is_one_message_edited_at_most_once_a_second(fake_api: FakeBotAPI, tmp_path):
    words = " ".join(f"w{i}" for i in range(40))
    assistant = ScriptedAssistant(reply=lambda m: Reply(stream=chunks(words, size=4, delay=0.06)))
    settings = telegram_settings(fake_api, tmp_path, telegram={"edit_interval": 1.0})
    async with running(assistant, settings):
        await fake_api.push(ask("count", GROUP))
        await fake_api.wait_for(lambda: any(m["text"] == words for m in fake_api.bot_messages(-100900)))
    assert len(fake_api.bot_messages(-100900)) == 1
    edits = fake_api.of("editMessageText", -100900)
    assert len(edits) >= 2
    writes = fake_api.of("sendMessage", -100900) + edits
    gaps = [b.at - a.at for a, b in zip(writes, writes[1:], strict=False)]
    assert min(gaps) >= 0.7, gaps  # chunks arrive every 0.06 s: unpaced, the gaps would be that small


async def test_unchanged_edit_is_skipped_not_fatal(fake_api: FakeBotAPI, tmp_path):
    async def stream():
        for piece in ("hello", " ", "**", "**", " world"):
            yield piece
            await asyncio.sleep(0.3)

    assistant = ScriptedAssistant(reply=lambda m: Reply(stream=stream()))
    async with running(assistant, telegram_settings(fake_api, tmp_path)):
        await fake_api.push(ask("greet", GROUP))
        await fake_api.wait_for(lambda: any("world" in m["text"] for m in fake_api.bot_messages(-100900)))
    statuses = [c.status for c in fake_api.of("editMessageText", -100900)]
    assert 400 in statuses, "Telegram said 'message is not modified' at least once"
    assert fake_api.bot_messages(-100900)[0]["text"].endswith("world")


async def test_typing_is_kept_alive_until_the_reply_is_done(fake_api: FakeBotAPI, tmp_path):
    async def slow():
        await asyncio.sleep(1.3)
        yield "done thinking"

    assistant = ScriptedAssistant(reply=lambda m: Reply(stream=slow()))
    async with running(assistant, telegram_settings(fake_api, tmp_path, telegram={"typing_interval": 0.3})):
        await fake_api.push(ask("think hard"))
        await fake_api.wait_for(lambda: fake_api.bot_messages(11))
        await asyncio.sleep(0.2)  # the reply handler finishes just after its last write
        count = len(fake_api.of("sendChatAction", 11))
        await asyncio.sleep(0.7)
        assert len(fake_api.of("sendChatAction", 11)) == count, "typing stops with the reply"
    assert count >= 4


async def test_without_drafts_a_direct_reply_is_edited_instead(fake_api: FakeBotAPI, tmp_path):
    fake_api.drafts_supported = False
    text = "one two three four five six seven eight nine ten"
    assistant = ScriptedAssistant(reply=lambda m: Reply(stream=chunks(text, size=5, delay=0.08)))
    async with running(assistant, telegram_settings(fake_api, tmp_path)):
        await fake_api.push(ask("count"))
        await fake_api.wait_for(lambda: any(m["text"] == text for m in fake_api.bot_messages(11)))
    assert len(fake_api.of("sendMessageDraft")) == 1, "tried once, then never again"
    assert fake_api.of("editMessageText", 11)
    assert len(fake_api.bot_messages(11)) == 1


async def test_unreadable_content_gets_a_short_answer(fake_api: FakeBotAPI, tmp_path):
    assistant = ScriptedAssistant()
    sticker = {
        "file_id": "S1",
        "file_unique_id": "u1",
        "type": "regular",
        "width": 512,
        "height": 512,
        "is_animated": False,
        "is_video": False,
    }
    photo = [{"file_id": "P1", "file_unique_id": "p1", "width": 90, "height": 90}]
    voice = {"file_id": "V1", "file_unique_id": "v1", "duration": 3}
    # with media reading off (tests/media covers it on), voice notes and photos are unreadable too
    async with running(assistant, telegram_settings(fake_api, tmp_path, media_enabled=False)):
        await fake_api.push({"message": message(private_chat(ADA), ADA, None, extra={"sticker": sticker})})
        await fake_api.push({"message": message(private_chat(ADA), ADA, None, extra={"voice": voice})})
        await fake_api.push(
            {"message": message(GROUP, ADA, None, extra={"photo": photo})}
        )  # group, unaddressed
        await fake_api.push(
            {"message": message(private_chat(ADA), ADA, None, extra={"photo": photo, "caption": "my cat"})}
        )
        await fake_api.wait_for(lambda: len(fake_api.bot_messages(11)) == 3)
        await asyncio.sleep(0.3)
    texts = [m["text"] for m in fake_api.bot_messages(11)]
    assert "stickers" in texts[0] and "voice notes" in texts[1]
    assert texts[2] == "You said: my cat"
    assert not fake_api.bot_messages(-100900)
    assert [m.text for m in assistant.received] == ["my cat"]


async def test_edited_message_reaches_the_core_as_an_edit(fake_api: FakeBotAPI, tmp_path):
    assistant = ScriptedAssistant()
    async with running(assistant, telegram_settings(fake_api, tmp_path)):
        original = message(private_chat(ADA), ADA, "I live in Pariss", message_id=77)
        await fake_api.push({"message": original})
        await fake_api.wait_for(lambda: fake_api.bot_messages(11))
        edited = dict(original, text="I live in Paris", edit_date=original["date"] + 5)
        await fake_api.push({"edited_message": edited})
        await fake_api.wait_for(lambda: len(assistant.received) == 2)
        await asyncio.sleep(0.3)
    edit = assistant.received[1]
    assert (edit.message_id, edit.text, edit.edited) == ("77", "I live in Paris", True)
    assert len(fake_api.bot_messages(11)) == 1, "an edit gets no new answer"


async def test_buttons_send_their_command_back_and_export_sends_a_document(fake_api: FakeBotAPI, tmp_path):
    def reply(msg):
        if msg.text == "/forget_me":
            return Reply(
                text="This erases everything I know about you. Sure?",
                buttons=[Button("Yes, erase", "/forget_me confirm " + "x" * 60), Button("No", "/help")],
            )
        if msg.text == "/export":
            return Reply(
                text="Here is everything.", document=Document("confidante-export.json", b'{"turns": []}')
            )
        return Reply(text=f"ran {msg.text[:18]}")

    assistant = ScriptedAssistant(reply=reply)
    async with running(assistant, telegram_settings(fake_api, tmp_path)):
        await fake_api.push(ask("/forget_me", command="/forget_me"))
        await fake_api.wait_for(lambda: fake_api.bot_messages(11))
        prompt = fake_api.bot_messages(11)[0]
        keyboard = prompt["reply_markup"]["inline_keyboard"][0]
        assert [b["text"] for b in keyboard] == ["Yes, erase", "No"]
        assert all(len(b["callback_data"].encode()) <= 64 for b in keyboard)
        query = {
            "id": "cbq1",
            "from": ADA,
            "chat_instance": "ci",
            "message": prompt,
            "data": keyboard[0]["callback_data"],
        }
        await fake_api.push({"callback_query": query})
        await fake_api.wait_for(lambda: len(fake_api.bot_messages(11)) == 2)
        await fake_api.push(ask("/export", command="/export"))
        await fake_api.wait_for(lambda: fake_api.of("sendDocument", 11))
    pressed = assistant.received[1]
    assert pressed.text == "/forget_me confirm " + "x" * 60 and pressed.sender_id == "11"
    assert fake_api.of("answerCallbackQuery")[0].params["callback_query_id"] == "cbq1"
    assert "reply_markup" not in fake_api.bot_messages(11)[0], "the keyboard is removed after a press"
    doc = fake_api.of("sendDocument", 11)[0].params["document"]
    assert doc == {"filename": "confidante-export.json", "content": b'{"turns": []}'}


async def test_failures_inside_the_core_or_the_stream_get_an_apology(fake_api: FakeBotAPI, tmp_path):
    async def broken():
        yield "half an ans"
        await asyncio.sleep(0.05)
        raise RuntimeError("engine fell over")

    def reply(msg):
        if msg.text == "crash":
            raise RuntimeError("core bug")
        if msg.text == "blank":
            return Reply(stream=chunks("   \n  "))
        return Reply(stream=broken())

    assistant = ScriptedAssistant(reply=reply)
    async with running(assistant, telegram_settings(fake_api, tmp_path)):
        for text in ("crash", "blank", "midway"):
            await fake_api.push(ask(text))
        await fake_api.wait_for(lambda: len(fake_api.bot_messages(11)) == 3)
    texts = [m["text"] for m in fake_api.bot_messages(11)]
    assert texts[0].startswith("Sorry, something went wrong")
    assert texts[1].startswith("I came up with nothing to say")
    assert texts[2].startswith("Sorry, something went wrong"), "the partial draft is not left as the answer"


async def test_ptb_rate_limiter_paces_groups_and_the_whole_bot(fake_api: FakeBotAPI, tmp_path):
    from telegram.ext import AIORateLimiter

    channel_settings = telegram_settings(fake_api, tmp_path)
    async with running(ScriptedAssistant(), channel_settings) as channel:
        limiter = channel.application.bot.rate_limiter
    assert isinstance(limiter, AIORateLimiter)
    assert (limiter._group_max_rate, limiter._group_time_period) == (20, 60), "20 messages a minute per group"
    assert limiter._base_limiter.max_rate == 30, "30 messages a second overall"
    assert limiter._max_retries == channel_settings.telegram.flood_retries
