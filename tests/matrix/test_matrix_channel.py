"""The Matrix channel against a real Synapse, with a scripted core: what reaches Matrix and
what the channel hands to the core. The real Assistant is in test_matrix_assistant.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from matrix_helpers import ScriptedAssistant, bot_settings, content, final_text, is_edit, start_bot, unique
from nio import RoomMemberEvent, RoomMessageText

pytestmark = pytest.mark.synapse


def bot_message(bot_id: str, room_id: str, *, first_only: bool = True):
    def pred(r: str, e: Any) -> bool:
        return r == room_id and isinstance(e, RoomMessageText) and e.sender == bot_id and not is_edit(e)

    return pred


async def dm_with_bot(person: Any, bot_id: str, encrypted: bool = False) -> tuple[str, Any]:
    room_id = await person.create_room([bot_id], direct=True, encrypted=encrypted)
    intro = await person.wait_for(bot_message(bot_id, room_id), what="intro")
    return room_id, intro


async def test_invite_join_intro_and_direct_answer(synapse, people, bots, tmp_path):
    alice = await people("alice")
    account = synapse.register(unique("confidante"))
    assistant = ScriptedAssistant()
    await start_bot(assistant, bot_settings(synapse, account, tmp_path), bots)

    room_id, intro = await dm_with_bot(alice, account.user_id)
    assert "/forget_me" in intro.body  # says how to be forgotten

    asked = await alice.say(room_id, "hello there")
    answer = await alice.wait_for(
        lambda r, e: bot_message(account.user_id, room_id)(r, e) and e.event_id != intro.event_id, what="answer"
    )
    await asyncio.sleep(0.5)
    await alice.sync(0)
    assert final_text(alice, room_id, account.user_id, answer.event_id) == "You said: hello there"
    msg = assistant.seen[-1]
    assert (msg.platform, msg.chat_id, msg.sender_id, msg.message_id) == ("matrix", room_id, alice.user_id, asked)
    assert msg.chat_kind == "direct" and msg.addressed
    assert "m.relates_to" not in content(answer)  # a DM answer is a plain message


async def test_invite_from_disallowed_user_is_declined(synapse, people, bots, tmp_path):
    alice, mallory = await people("alice"), await people("mallory")
    account = synapse.register(unique("confidante"))
    assistant = ScriptedAssistant()
    settings = bot_settings(synapse, account, tmp_path, matrix_allowed_inviters=[alice.user_id])
    await start_bot(assistant, settings, bots)

    room_id = await mallory.create_room([account.user_id], direct=True)
    await mallory.wait_for(
        lambda r, e: r == room_id
        and isinstance(e, RoomMemberEvent)
        and e.state_key == account.user_id
        and e.membership == "leave",
        what="declined invite",
    )
    assert not mallory.from_user(account.user_id, room_id) or all(
        isinstance(e, RoomMemberEvent) for e in mallory.from_user(account.user_id, room_id)
    )
    # the allowed user still gets in
    await dm_with_bot(alice, account.user_id)


def answers_to(bot_id: str, room_id: str, event_id: str):
    """Bot messages (not edits) that relate to `event_id` as a reply or in its thread."""

    def pred(r: str, e: Any) -> bool:
        if not bot_message(bot_id, room_id)(r, e):
            return False
        rel = content(e).get("m.relates_to") or {}
        return (rel.get("m.in_reply_to") or {}).get("event_id") == event_id

    return pred


async def group_with_bot(synapse, people, bots, tmp_path, assistant, **extra):
    alice, bob = await people("alice"), await people("bob")
    account = synapse.register(unique("confidante"))
    bot = await start_bot(assistant, bot_settings(synapse, account, tmp_path, **extra), bots)
    room_id = await alice.create_room([account.user_id, bob.user_id], name="team")
    await bob.client.join(room_id)
    await alice.wait_for(bot_message(account.user_id, room_id), what="intro")
    await alice.wait_for(
        lambda r, e: r == room_id and isinstance(e, RoomMemberEvent) and e.state_key == bob.user_id and e.membership == "join"
    )
    return alice, bob, account, bot, room_id


async def test_group_answers_only_when_addressed_and_in_the_thread(synapse, people, bots, tmp_path):
    assistant = ScriptedAssistant()
    alice, bob, account, bot, room_id = await group_with_bot(synapse, people, bots, tmp_path, assistant)
    bot_id = account.user_id

    plain = await alice.say(room_id, "lunch at noon, everyone?")
    # m.mentions (current clients)
    mentioned = await bob.say(room_id, "what is a good lunch spot", **{"m.mentions": {"user_ids": [bot_id]}})
    reply = await alice.wait_for(answers_to(bot_id, room_id, mentioned), what="answer to m.mentions")
    assert "m.thread" not in str(content(reply).get("m.relates_to"))
    # display name in the body (older clients), inside a thread
    root = await alice.say(room_id, "planning thread")
    in_thread = await alice.say(
        room_id,
        f"{bot.display_name}: summarise this thread please",
        **{"m.relates_to": {"rel_type": "m.thread", "event_id": root, "is_falling_back": True, "m.in_reply_to": {"event_id": root}}},
    )
    threaded = await alice.wait_for(answers_to(bot_id, room_id, in_thread), what="answer in thread")
    rel = content(threaded)["m.relates_to"]
    assert rel["rel_type"] == "m.thread" and rel["event_id"] == root
    # a reply to one of the bot's messages
    follow = await bob.say(room_id, "and for dinner?", **{"m.relates_to": {"m.in_reply_to": {"event_id": reply.event_id}}})
    await alice.wait_for(answers_to(bot_id, room_id, follow), what="answer to a reply")

    await alice.no_event(answers_to(bot_id, room_id, plain), 1.0)
    by_id = {m.message_id: m for m in assistant.seen}
    assert by_id[plain].addressed is False and by_id[plain].chat_kind == "group"
    assert by_id[mentioned].addressed and by_id[follow].addressed and by_id[follow].reply_to == reply.event_id
    assert by_id[in_thread].thread_id == root
    assert by_id[in_thread].text == "summarise this thread please"  # the mention is stripped


async def test_streamed_reply_is_one_message_edited_at_most_about_once_a_second(synapse, people, bots, tmp_path):
    words = [f"word{i}" for i in range(60)]
    assistant = ScriptedAssistant(reply=lambda m: " ".join(words) + " <b>not bold</b> **bold**", delay=0.05, chunk=2)
    alice = await people("alice")
    account = synapse.register(unique("confidante"))
    await start_bot(assistant, bot_settings(synapse, account, tmp_path, matrix_edit_interval_seconds=1.0), bots)
    room_id, intro = await dm_with_bot(alice, account.user_id)

    await alice.say(room_id, "tell me a long story")
    first = await alice.wait_for(
        lambda r, e: bot_message(account.user_id, room_id)(r, e) and e.event_id != intro.event_id
    )
    whole = " ".join(words) + " <b>not bold</b> **bold**"
    last = await alice.wait_for(
        lambda r, e: is_edit(e) and content(e)["m.new_content"]["body"] == whole, what="final edit"
    )
    edits = [e for e in alice.from_user(account.user_id, room_id) if is_edit(e)]
    assert all(content(e)["m.relates_to"]["event_id"] == first.event_id for e in edits)
    # ~1.6 s of generation: the first message plus a handful of edits, not one per chunk (32 chunks)
    assert 1 <= len(edits) <= 5, len(edits)
    stamps = [first.server_timestamp] + [e.server_timestamp for e in edits]
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert all(g >= 700 for g in gaps[:-1]), gaps  # the last edit may follow the end of the stream at once
    new = content(last)["m.new_content"]
    assert new["format"] == "org.matrix.custom.html"
    assert "&lt;b&gt;not bold&lt;/b&gt;" in new["formatted_body"] and "<strong>bold</strong>" in new["formatted_body"]


async def test_very_long_reply_is_split_below_the_event_size_limit(synapse, people, bots, tmp_path):
    paragraph = "Ünïcödé & <tags> \"quotes\" " * 40
    long_text = "\n\n".join(f"{i}: {paragraph}" for i in range(120)) + "\n\nTHE END."  # ~130 kB
    assistant = ScriptedAssistant(reply=lambda m: long_text, chunk=400)
    alice = await people("alice")
    account = synapse.register(unique("confidante"))
    await start_bot(assistant, bot_settings(synapse, account, tmp_path), bots)
    room_id, intro = await dm_with_bot(alice, account.user_id)

    await alice.say(room_id, "everything please")
    tail = "THE END."

    def finished(r: str, e: Any) -> bool:
        c = content(e)
        body = c["m.new_content"]["body"] if is_edit(e) else c.get("body", "")
        return r == room_id and getattr(e, "sender", "") == account.user_id and body.endswith(tail)

    await alice.wait_for(finished, timeout=60, what="end of the long reply")
    messages = [e for e in alice.from_user(account.user_id, room_id) if isinstance(e, RoomMessageText)]
    originals = [e for e in messages if not is_edit(e) and e.event_id != intro.event_id]
    assert len(originals) >= 3
    import json

    assert max(len(json.dumps(e.source).encode()) for e in messages) < 65_536
    shown = [final_text(alice, room_id, account.user_id, e.event_id) for e in originals]
    assert " ".join(" ".join(shown).split()) == " ".join(long_text.split())
