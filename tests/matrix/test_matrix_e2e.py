"""End-to-end encryption details with a scripted core: late room keys, unverified devices."""

from __future__ import annotations

import asyncio

import pytest
from nio import MegolmEvent, RoomMessageText
from nio.crypto.sessions import OutboundGroupSession

from tests.channel_fakes import ScriptedAssistant
from tests.matrix.matrix_helpers import bot_settings, content, is_edit, start_bot, unique

pytestmark = pytest.mark.synapse


def from_bot(bot_id: str, room_id: str, kind: type = RoomMessageText):
    return lambda r, e: r == room_id and isinstance(e, kind) and e.sender == bot_id


async def encrypted_dm(alice, bot_id):
    room_id = await alice.create_room([bot_id], direct=True, encrypted=True)
    await alice.wait_for(from_bot(bot_id, room_id), what="intro")
    return room_id


async def test_message_whose_key_arrives_late_is_answered_once_the_key_is_there_even_after_a_restart(
    synapse, people, bots, tmp_path
):
    assistant = ScriptedAssistant()
    alice = await people("alice", encrypted=True)
    account = synapse.register(unique("confidante"))
    bot = await start_bot(assistant, bot_settings(synapse, account, tmp_path), bots)
    room_id = await encrypted_dm(alice, account.user_id)

    # Alice's client withholds the room key from the bot's device for her next session...
    olm = alice.client.olm
    olm.rotate_outbound_group_session(room_id)
    [bot_device] = [d for d in alice.client.device_store.active_user_devices(account.user_id)]
    alice.client.blacklist_device(bot_device)
    snapshot = olm.outbound_group_sessions[room_id].pickle()  # the session before its first message
    await alice.say(room_id, "can you read this yet?")
    for _ in range(40):  # the bot sees ciphertext it cannot read and asks for the key
        if bot._undecrypted and bot.client.outgoing_key_requests:
            break
        await alice.sync(250)
    assert bot._undecrypted, "the bot never saw the undecryptable message"
    [(_, waiting, _)] = bot._undecrypted.values()
    assert waiting.session_id in bot.client.outgoing_key_requests
    assert not [m for m in assistant.seen if "read this" in m.text]
    # the bot restarts while it waits: the message stays pending on disk
    await bot.stop()
    bot = await start_bot(assistant, bot_settings(synapse, account, tmp_path), bots)
    for _ in range(40):
        if bot._undecrypted:
            break
        await asyncio.sleep(0.1)
    assert bot._undecrypted

    # ...then shares it after all (as a client does when it learns about the device late).
    alice.client.unblacklist_device(bot_device)
    olm.outbound_group_sessions[room_id] = OutboundGroupSession.from_pickle(snapshot)  # same key, index 0
    await alice.client.share_group_session(room_id, ignore_unverified_devices=True)
    await alice.wait_for(
        lambda r, e: (
            from_bot(account.user_id, room_id)(r, e)
            and "can you read this yet?" in (content(e)["m.new_content"]["body"] if is_edit(e) else e.body)
        ),
        what="answer after the late key",
    )
    assert [m.text for m in assistant.seen].count("can you read this yet?") == 1


async def test_refusing_unverified_devices_keeps_them_from_reading_replies(synapse, people, bots, tmp_path):
    assistant = ScriptedAssistant()
    alice = await people("alice", encrypted=True)
    account = synapse.register(unique("confidante"))
    settings = bot_settings(synapse, account, tmp_path, matrix={"unverified_devices": "refuse"})
    bot = await start_bot(assistant, settings, bots)
    room_id = await alice.create_room([account.user_id], direct=True, encrypted=True)
    # the bot answers (its intro), but Alice's unverified device got no key to read it
    undecryptable = await alice.wait_for(
        from_bot(account.user_id, room_id, MegolmEvent), what="encrypted intro"
    )
    assert undecryptable.session_id
    [device] = list(bot.client.device_store.active_user_devices(alice.user_id))
    assert device.blacklisted and not device.verified


async def test_default_sends_to_unverified_devices_without_verifying_them(synapse, people, bots, tmp_path):
    assistant = ScriptedAssistant()
    alice = await people("alice", encrypted=True)
    account = synapse.register(unique("confidante"))
    bot = await start_bot(assistant, bot_settings(synapse, account, tmp_path), bots)
    room_id = await encrypted_dm(alice, account.user_id)  # Alice can read the intro
    [device] = list(bot.client.device_store.active_user_devices(alice.user_id))
    assert not device.verified and not device.blacklisted
    assert room_id in bot.client.rooms and bot.client.rooms[room_id].encrypted
