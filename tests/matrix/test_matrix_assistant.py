"""The Matrix channel with the real Assistant (LanceDB, recall, prompt, a tiny random Llama)
against a real Synapse: the whole path a Matrix user's message takes."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from nio import RoomMessageText

from tests.matrix.matrix_helpers import bot_settings, content, is_edit, start_bot, unique

pytestmark = pytest.mark.synapse


def settings_for(synapse, account, tmp_path, **extra):
    values = {"max_new_tokens": 16, "temperature": 0.0, **extra}
    return bot_settings(synapse, account, tmp_path / "data", **values)


def bot_texts(person, bot_id: str, room_id: str) -> dict[str, str]:
    """Each bot message id -> the text a client shows now (latest edit applied)."""
    shown: dict[str, str] = {}
    for event in person.from_user(bot_id, room_id):
        if not isinstance(event, RoomMessageText):
            continue
        c = content(event)
        if is_edit(event):
            shown[c["m.relates_to"]["event_id"]] = c["m.new_content"]["body"]
        else:
            shown.setdefault(event.event_id, c.get("body", ""))
    return shown


async def answered(person, bot_id: str, room_id: str, after: int, settle: float = 1.5) -> list[str]:
    """Wait for the bot's next message after `after` known ones, then for its edits to settle."""
    await person.wait_for(
        lambda r, e: (
            r == room_id
            and isinstance(e, RoomMessageText)
            and e.sender == bot_id
            and not is_edit(e)
            and len(
                [
                    x
                    for x in person.from_user(bot_id, room_id)
                    if isinstance(x, RoomMessageText) and not is_edit(x)
                ]
            )
            > after
        ),
        timeout=60,
        what="answer",
    )
    await person.no_event(lambda r, e: False, settle)
    return list(bot_texts(person, bot_id, room_id).values())


def own_count(person, bot_id: str, room_id: str) -> int:
    return len(bot_texts(person, bot_id, room_id))


async def test_dm_conversation_remembers_across_a_bot_restart(
    synapse, people, bots, tmp_path, real_assistant
):
    alice = await people("alice")
    account = synapse.register(unique("confidante"))
    settings = settings_for(synapse, account, tmp_path)
    assistant = real_assistant(settings)
    bot = await start_bot(assistant, settings, bots)
    room_id = await alice.create_room([account.user_id], direct=True)
    await answered(alice, account.user_id, room_id, 0, settle=0.2)  # the intro

    await alice.say(room_id, "My cat is called Miso and she loves tuna.")
    texts = await answered(alice, account.user_id, room_id, 1)
    turns = assistant.store.turns_of(assistant.store.person_for("matrix", alice.user_id))
    assert [t.role for t in turns] == ["user", "assistant"]
    assert texts[-1] == turns[1].text  # the final edit holds exactly the recorded reply
    await bot.stop()

    # a new process: a new Assistant over the same data dir, the same Matrix device
    assistant2 = real_assistant(settings)
    bot2 = await start_bot(assistant2, settings, bots)
    assert bot2.client.device_id == bot.client.device_id
    await alice.say(room_id, "What is my cat called?")
    await answered(alice, account.user_id, room_id, 2)
    assert "Miso" in assistant2.engine.last_prompt_text()
    assert len(assistant2.engine.prompts) == 1  # the old message was not answered again


async def test_the_channel_joins_the_recovery_loop_while_it_runs(synapse, bots, tmp_path, real_assistant):
    """A message whose answer failed, or that waited for an earlier one of its room, is answered
    while the bot runs only if the channel gave the recovery loop its answer function: a crash
    test once left two group questions unanswered after a restart because it had not."""
    account = synapse.register(unique("confidante"))
    settings = settings_for(synapse, account, tmp_path)
    assistant = real_assistant(settings)
    bot = await start_bot(assistant, settings, bots)
    assert "matrix" in assistant.recovery.channels
    await bot.stop()
    assert "matrix" not in assistant.recovery.channels


async def test_group_private_fact_never_reaches_a_group_prompt(
    synapse, people, bots, tmp_path, real_assistant
):
    alice, bob = await people("alice"), await people("bob")
    account = synapse.register(unique("confidante"))
    settings = settings_for(synapse, account, tmp_path)
    assistant = real_assistant(settings)
    await start_bot(assistant, settings, bots)
    bot_id = account.user_id

    dm_room = await alice.create_room([bot_id], direct=True)
    await answered(alice, bot_id, dm_room, 0, settle=0.2)
    await alice.say(dm_room, "Private: my salary is 98765 euros, keep it secret.")
    await answered(alice, bot_id, dm_room, 1, settle=0.5)

    group = await alice.create_room([bot_id, bob.user_id], name="team")
    await bob.client.join(group)
    await answered(alice, bot_id, group, 0, settle=0.5)
    prompts_before = len(assistant.engine.prompts)
    await alice.say(group, "what shall we order for lunch")  # not addressed
    await bob.say(group, "pizza again?")
    await asyncio.sleep(1.0)
    assert len(assistant.engine.prompts) == prompts_before  # recorded, not answered
    asked = await alice.say(
        group, "what do you know about my salary?", **{"m.mentions": {"user_ids": [bot_id]}}
    )
    reply = await alice.wait_for(
        lambda r, e: (
            r == group
            and getattr(e, "sender", "") == bot_id
            and not is_edit(e)
            and (content(e).get("m.relates_to") or {}).get("m.in_reply_to", {}).get("event_id") == asked
        ),
        timeout=60,
        what="group answer",
    )
    assert reply is not None
    prompt = assistant.engine.last_prompt_text()
    assert "98765" not in prompt
    assert "pizza again?" in prompt  # the group's own context is there


async def test_redaction_removes_the_stored_turn(synapse, people, bots, tmp_path, real_assistant):
    alice = await people("alice")
    account = synapse.register(unique("confidante"))
    settings = settings_for(synapse, account, tmp_path)
    assistant = real_assistant(settings)
    await start_bot(assistant, settings, bots)
    room_id = await alice.create_room([account.user_id], direct=True)
    await answered(alice, account.user_id, room_id, 0, settle=0.2)

    secret = await alice.say(room_id, "My bank PIN is 2468.")
    await answered(alice, account.user_id, room_id, 1)
    assert assistant.store.turns_by_message("matrix", room_id, secret)
    await alice.client.room_redact(room_id, secret)
    for _ in range(100):
        if not assistant.store.turns_by_message("matrix", room_id, secret):
            break
        await asyncio.sleep(0.1)
    assert assistant.store.turns_by_message("matrix", room_id, secret) == []
    person = assistant.store.person_for("matrix", alice.user_id)
    assert all("2468" not in t.text for t in assistant.store.turns_of(person))


async def test_kick_stops_answering_in_that_room(synapse, people, bots, tmp_path, real_assistant):
    alice, bob = await people("alice"), await people("bob")
    account = synapse.register(unique("confidante"))
    settings = settings_for(synapse, account, tmp_path)
    assistant = real_assistant(settings)
    await start_bot(assistant, settings, bots)
    group = await alice.create_room([account.user_id, bob.user_id], name="team")
    await answered(alice, account.user_id, group, 0, settle=0.2)
    await alice.client.room_kick(group, account.user_id)
    for _ in range(100):
        if not assistant.store.chat("matrix", group).active:
            break
        await asyncio.sleep(0.1)
    assert assistant.store.chat("matrix", group).active is False


async def test_encrypted_dm_is_answered_encrypted(synapse, people, bots, tmp_path, real_assistant):
    alice = await people("alice", encrypted=True)
    account = synapse.register(unique("confidante"))
    settings = settings_for(synapse, account, tmp_path)
    assistant = real_assistant(settings)
    bot = await start_bot(assistant, settings, bots)
    room_id = await alice.create_room([account.user_id], direct=True, encrypted=True)
    await answered(alice, account.user_id, room_id, 0, settle=0.2)  # the intro, decrypted by alice

    await alice.say(room_id, "This is between us: I am planning a surprise party.")
    texts = await answered(alice, account.user_id, room_id, 1)
    turns = assistant.store.turns_of(assistant.store.person_for("matrix", alice.user_id))
    assert turns[0].text == "This is between us: I am planning a surprise party."
    assert texts[-1] == turns[1].text
    # on the wire (what the homeserver stores) every message in the room is ciphertext
    raw = httpx.get(
        f"{synapse.url}/_matrix/client/v3/rooms/{room_id}/messages",
        params={"dir": "b", "limit": 50},
        headers={"Authorization": f"Bearer {alice.account.access_token}"},
    ).json()["chunk"]
    from_bot = [e for e in raw if e["sender"] == account.user_id and e["type"] != "m.room.member"]
    assert from_bot and all(e["type"] == "m.room.encrypted" for e in from_bot)
    assert all("surprise" not in str(e) for e in raw)
    assert bot.client.olm is not None and bot.client.device_id


async def test_bad_input_gets_clear_answers_and_nothing_is_lost(
    synapse, people, bots, tmp_path, real_assistant
):
    alice = await people("alice")
    account = synapse.register(unique("confidante"))
    settings = settings_for(synapse, account, tmp_path, max_message_chars=2000)
    assistant = real_assistant(settings)
    bot = await start_bot(assistant, settings, bots)
    room_id = await alice.create_room([account.user_id], direct=True)
    await answered(alice, account.user_id, room_id, 0, settle=0.2)

    await alice.say(room_id, "   ")
    texts = await answered(alice, account.user_id, room_id, 1, settle=0.3)
    assert "empty" in texts[-1]
    huge = "long " * 1000
    await alice.say(room_id, huge)
    texts = await answered(alice, account.user_id, room_id, 2, settle=0.3)
    assert "5,000 characters" in texts[-1]
    odd = "rtl \u202e café 🎉 <img src=x onerror=alert(1)> \"quotes' $ids"
    await alice.say(
        room_id, odd, **{"m.mentions": {"user_ids": []}, "m.relates_to": {"m.in_reply_to": "not an object"}}
    )
    await answered(alice, account.user_id, room_id, 3, settle=0.5)
    person = assistant.store.person_for("matrix", alice.user_id)
    stored = [t.text for t in assistant.store.turns_of(person) if t.role == "user"]
    assert huge.strip() in [s.strip() for s in stored]  # kept whole
    assert any("café 🎉" in s and "<img" in s for s in stored)
    # whatever the model said, no raw HTML from a person reaches a formatted_body
    for event in alice.from_user(account.user_id, room_id):
        c = content(event)
        html = (c.get("m.new_content") or c).get("formatted_body", "")
        assert "<img" not in html
    for _ in range(100):  # the last reply's closing edit is paced like the others: let it land
        if not bot.state.pending:
            break
        await asyncio.sleep(0.1)
    assert bot.state.pending == {}


async def test_only_room_admins_turn_group_context_off(synapse, people, bots, tmp_path, real_assistant):
    """Only a member whose power level lets them change the room's state (the room's creator
    here; not a member at the default level 0) may switch the group's context recording."""
    alice, bob = await people("alice"), await people("bob")
    account = synapse.register(unique("confidante"))
    settings = settings_for(synapse, account, tmp_path)
    assistant = real_assistant(settings)
    await start_bot(assistant, settings, bots)
    bot_id = account.user_id
    group = await alice.create_room([bot_id, bob.user_id], name="team")
    await bob.client.join(group)
    await answered(alice, bot_id, group, 0, settle=0.5)  # the introduction

    await bob.say(group, "/context off")
    texts = await answered(alice, bot_id, group, 1, settle=0.3)
    assert texts[-1] == "Only this group's admins can turn group context on or off."
    assert assistant.store.chat("matrix", group).record_context

    await alice.say(group, "/context off")
    texts = await answered(alice, bot_id, group, 2, settle=0.3)
    assert texts[-1].startswith("Group context is off")
    assert not assistant.store.chat("matrix", group).record_context
