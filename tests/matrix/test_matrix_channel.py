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
