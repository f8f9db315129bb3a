"""Telegram voice notes and photos through the real PTB Application and the fake Bot API
(getFile + the file endpoint), answered by the real Assistant and recalled later."""

from __future__ import annotations

import asyncio

import pytest

from tests.media.assistant_fixture import builder, media_bytes_in
from tests.telegram.conftest import running, telegram_settings
from tests.telegram.fake_bot_api import FakeBotAPI, message, private_chat, user

ADA = user(31, "Ada")


@pytest.fixture
async def fake_api():
    api = FakeBotAPI()
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
def make(tiny_model):
    yield from builder(tiny_model)


async def answered(api: FakeBotAPI, n: int) -> list[str]:
    await api.wait_for(lambda: len(api.bot_messages(31)) >= n, timeout=90)
    await asyncio.sleep(0.2)
    return [m.get("text", "") for m in api.bot_messages(31)]


async def test_voice_note_and_photo_are_read_answered_and_recalled(
    fake_api: FakeBotAPI, tmp_path, make, sister_note: bytes, receipt_png: bytes
):
    settings = telegram_settings(fake_api, tmp_path / "data", max_new_tokens=8, temperature=0.0)
    assistant, engine = make(settings)
    voice = dict(fake_api.add_file("VOICE1", sister_note), duration=3, mime_type="audio/ogg")
    photo = [dict(fake_api.add_file("PHOTO1", receipt_png), width=400, height=150)]
    async with running(assistant, settings):
        await fake_api.push({"message": message(private_chat(ADA), ADA, None, extra={"voice": voice})})
        await answered(fake_api, 1)
        assert "Norway" in engine.last_prompt_text(), "the transcript reached the model as the message"
        await fake_api.push(
            {"message": message(private_chat(ADA), ADA, None, extra={"photo": photo, "caption": "receipt"})}
        )
        await fake_api.wait_for(lambda: len(fake_api.of("getFile")) == 2)
        await asyncio.sleep(0.5)

    assistant, engine = make(settings)  # a new process: only the data dir carries over
    async with running(assistant, settings):
        await fake_api.push({"message": message(private_chat(ADA), ADA, "Where did my sister move?")})
        await fake_api.wait_for(lambda: len(engine.prompts) >= 1, timeout=90)
        assert "(voice note)" in engine.last_prompt_text() and "Norway" in engine.last_prompt_text()
        await fake_api.push({"message": message(private_chat(ADA), ADA, "What was the invoice total?")})
        await fake_api.wait_for(lambda: len(engine.prompts) >= 2, timeout=90)
        assert "4721" in engine.last_prompt_text() or "58.40" in engine.last_prompt_text()
        await fake_api.push({"message": message(private_chat(ADA), ADA, "/memory", command="/memory")})
        await fake_api.wait_for(
            lambda: any("(voice note)" in m.get("text", "") for m in fake_api.bot_messages(31)), timeout=60
        )
        await fake_api.push({"message": message(private_chat(ADA), ADA, "/forget Norway", command="/forget")})
        await fake_api.wait_for(
            lambda: any("Forgotten" in m.get("text", "") for m in fake_api.bot_messages(31)), timeout=60
        )
        person = assistant.store.person_for("telegram", "31")
        assert not [t for t in assistant.store.turns_of(person) if "Norway" in t.text], "/forget covers it"
    memory = next(m["text"] for m in fake_api.bot_messages(31) if "(voice note)" in m.get("text", ""))
    assert "(photo) receipt" in memory
    assert media_bytes_in(settings.data_dir, sister_note, receipt_png) == []


async def test_an_oversized_voice_note_gets_a_clear_reply_and_no_download(fake_api: FakeBotAPI, tmp_path):
    from tests.channel_fakes import ScriptedAssistant

    assistant = ScriptedAssistant()
    settings = telegram_settings(fake_api, tmp_path, media_max_audio_seconds_by_platform={"telegram": 60})
    voice = dict(fake_api.add_file("LONG", b"x" * 100), duration=600, mime_type="audio/ogg")
    broken = dict(fake_api.add_file("BROKEN", b"not audio at all"), duration=2, mime_type="audio/ogg")
    async with running(assistant, settings):
        await fake_api.push({"message": message(private_chat(ADA), ADA, None, extra={"voice": voice})})
        await fake_api.push({"message": message(private_chat(ADA), ADA, None, extra={"voice": broken})})
        texts = await answered(fake_api, 2)
    assert "longer than I can listen to (60 seconds)" in texts[0]
    assert "couldn't play that voice note" in texts[1]
    assert [c.params["file_id"] for c in fake_api.of("getFile")] == ["BROKEN"]
    assert assistant.received == [], "nothing reached the core"


async def test_a_group_photo_not_addressed_keeps_its_caption_unread(fake_api: FakeBotAPI, tmp_path):
    from tests.channel_fakes import ScriptedAssistant
    from tests.telegram.fake_bot_api import group_chat

    assistant = ScriptedAssistant()
    group = group_chat(-100777, "Team")
    photo = [dict(fake_api.add_file("GP", b"\x89PNG whatever"), width=10, height=10)]
    async with running(assistant, telegram_settings(fake_api, tmp_path)):
        await fake_api.push(
            {"message": message(group, ADA, None, extra={"photo": photo, "caption": "our board"})}
        )
        await fake_api.push({"message": message(group, ADA, None, extra={"photo": photo})})
        await fake_api.wait_for(lambda: assistant.received, timeout=30)
        await asyncio.sleep(0.5)
    assert [(m.text, m.addressed) for m in assistant.received] == [("(photo) our board", False)]
    assert not fake_api.of("getFile"), "a group's photo not meant for the bot is never downloaded"
