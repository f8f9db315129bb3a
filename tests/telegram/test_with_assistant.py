"""The real Assistant (LanceDB files, the real embedder, a tiny random Llama) behind the real PTB
Application, talking to the fake Bot API: memory, group scoping, privacy, commands."""

from __future__ import annotations

import asyncio
import json

import pytest

from core.memory.records import PRIVATE, chat_scope
from tests.media.assistant_fixture import builder
from tests.telegram.conftest import running, telegram_settings
from tests.telegram.fake_bot_api import FakeBotAPI, group_chat, message, private_chat, user

ADA, BOB = user(21, "Ada"), user(22, "Bob")
GROUP = group_chat(-100321, "Book club")
MENTION = "@ConfidanteTestBot"


@pytest.fixture
def settings(fake_api: FakeBotAPI, tmp_path):
    return telegram_settings(fake_api, tmp_path / "data", max_new_tokens=12, temperature=0.0)


@pytest.fixture
def make(tiny_model, settings):
    """Build the Assistant as `confidante run` does, on the tiny random Llama; a new call is a new process."""
    yield from builder(tiny_model)


async def say(fake_api: FakeBotAPI, chat, who, text, **kw) -> dict:
    update = await fake_api.push({"message": message(chat, who, text, **kw)})
    return update["message"]


async def answered(fake_api: FakeBotAPI, chat_id: int, n: int) -> list[str]:
    await fake_api.wait_for(lambda: len(fake_api.bot_messages(chat_id)) >= n, timeout=60)
    await asyncio.sleep(0.2)
    return [m.get("text", "") for m in fake_api.bot_messages(chat_id)]


async def test_a_direct_conversation_is_remembered_across_two_runs(fake_api: FakeBotAPI, settings, make):
    assistant, _ = make(settings)
    async with running(assistant, settings):
        await say(fake_api, private_chat(ADA), ADA, "My sister Ingrid moved to Tromsø last spring.")
        first = await answered(fake_api, 21, 1)
    assert first and first[0].strip()

    assistant, engine = make(settings)  # a new process: only the data dir carries over
    async with running(assistant, settings):
        await say(fake_api, private_chat(ADA), ADA, "Where does my sister live now?")
        await answered(fake_api, 21, 2)
    prompt = engine.last_prompt_text()
    assert "Ingrid moved to Tromsø" in prompt
    turns = assistant.store.turns_of(assistant.store.person_for("telegram", "21"), platform="telegram")
    assert [t.role for t in turns] == ["user", "assistant", "user", "assistant"]
    assert all(t.visibility == PRIVATE for t in turns)


async def test_group_records_unaddressed_messages_and_answers_addressed_ones(
    fake_api: FakeBotAPI, settings, make
):
    assistant, engine = make(settings)
    async with running(assistant, settings):
        await say(fake_api, GROUP, BOB, "We are reading Middlemarch this month.", message_id=1)
        await asyncio.sleep(1.0)
        assert fake_api.bot_messages(-100321) == [], "not addressed: no reply"
        assert not fake_api.of("sendChatAction", -100321), "and no typing either"
        await say(
            fake_api, GROUP, ADA, f"{MENTION} which book are we reading?", message_id=2, mention=MENTION
        )
        texts = await answered(fake_api, -100321, 1)
    assert len(texts) == 1
    assert fake_api.of("sendMessage", -100321)[0].params["reply_parameters"]["message_id"] == 2
    assert "Middlemarch" in engine.last_prompt_text(), "the group's context reached the prompt"
    stored = assistant.store.chat_turns("telegram", "-100321", scope=chat_scope("telegram", "-100321"))
    assert "We are reading Middlemarch this month." in [t.text for t in stored]
    assert all(t.visibility == "chat:telegram:-100321" for t in stored)


async def test_a_private_fact_never_reaches_a_group_prompt(fake_api: FakeBotAPI, settings, make):
    assistant, engine = make(settings)
    async with running(assistant, settings):
        await say(fake_api, private_chat(ADA), ADA, "Between us: my salary is 91234 euros.")
        await answered(fake_api, 21, 1)
        await say(fake_api, GROUP, ADA, f"{MENTION} what is my salary?", mention=MENTION)
        group_texts = await answered(fake_api, -100321, 1)
        group_prompt = engine.last_prompt_text()
        await say(fake_api, private_chat(ADA), ADA, "what is my salary?")
        await answered(fake_api, 21, 2)
        direct_prompt = engine.last_prompt_text()
    assert "91234" not in group_prompt
    assert not any("91234" in t for t in group_texts)
    assert "91234" in direct_prompt, "control: the fact is there in the direct chat"


async def test_commands_export_and_forget_me_with_its_button(fake_api: FakeBotAPI, settings, make):
    assistant, _ = make(settings)
    async with running(assistant, settings):
        await say(fake_api, private_chat(ADA), ADA, "I keep bees on my roof.")
        await answered(fake_api, 21, 1)
        await say(
            fake_api, private_chat(ADA), ADA, "/export@ConfidanteTestBot", command="/export@ConfidanteTestBot"
        )
        await fake_api.wait_for(lambda: fake_api.of("sendDocument", 21), timeout=30)
        exported = json.loads(fake_api.of("sendDocument", 21)[0].params["document"]["content"])
        assert "I keep bees on my roof." in json.dumps(exported)

        await say(fake_api, private_chat(ADA), ADA, "/forget_me", command="/forget_me")
        await fake_api.wait_for(
            lambda: any("reply_markup" in m for m in fake_api.bot_messages(21)), timeout=30
        )
        prompt = next(m for m in fake_api.bot_messages(21) if "reply_markup" in m)
        button = prompt["reply_markup"]["inline_keyboard"][0][0]
        query = {
            "id": "q-1",
            "from": ADA,
            "chat_instance": "x",
            "message": prompt,
            "data": button["callback_data"],
        }
        before = len(fake_api.bot_messages(21))
        await fake_api.push({"callback_query": query})
        texts = await answered(fake_api, 21, before + 1)
    assert texts[-1].startswith("Done. I've erased everything")
    person = assistant.store.person_for("telegram", "21")
    assert person is None or assistant.store.turns_of(person) == []
    assert [c["command"] for c in fake_api.commands] == [name for name, _ in assistant.command_list()]


async def test_only_group_admins_turn_group_context_off(fake_api: FakeBotAPI, settings, make):
    fake_api.admins[-100321] = {21}
    assistant, _ = make(settings)
    async with running(assistant, settings):
        await say(fake_api, GROUP, BOB, f"/context off {MENTION}", mention=MENTION)
        refused = await answered(fake_api, -100321, 1)
        assert refused == ["Only this group's admins can turn group context on or off."]
        assert assistant.store.chat("telegram", "-100321").record_context

        await say(
            fake_api, GROUP, ADA, "/context@ConfidanteTestBot off", command="/context@ConfidanteTestBot"
        )
        texts = await answered(fake_api, -100321, 2)
        assert "off" in texts[1]
        await say(fake_api, GROUP, BOB, "my phone number is 5550199, call me")
        await asyncio.sleep(1.0)
    stored = assistant.store.chat_turns("telegram", "-100321", scope=chat_scope("telegram", "-100321"))
    assert not any("5550199" in t.text for t in stored), "with context off, unaddressed messages are not kept"
    assert fake_api.of("getChatMember")[0].params["user_id"] == 22


async def test_a_refused_setting_is_not_run_after_a_restart(fake_api: FakeBotAPI, settings, make):
    """The channel refuses a non-admin's /context off itself; the inbox must not hand the
    message to the core after a restart as if it had never been answered."""
    assistant, _ = make(settings)
    async with running(assistant, settings):
        await say(fake_api, GROUP, BOB, f"/context off {MENTION}", mention=MENTION)
        assert await answered(fake_api, -100321, 1) == [
            "Only this group's admins can turn group context on or off."
        ]
    assistant, _ = make(settings)  # a new process on the same data dir
    async with running(assistant, settings):
        await asyncio.sleep(1.0)
        assert await assistant.unanswered("telegram") == []
    assert len(fake_api.bot_messages(-100321)) == 1
    assert assistant.store.chat("telegram", "-100321").record_context
