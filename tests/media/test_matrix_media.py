"""Matrix voice messages and images on the real Synapse, in an end-to-end encrypted DM: the bot
decrypts the event, downloads the attachment from the authenticated media API, decrypts it with
the event's key in memory, and the real Assistant answers and recalls it later."""

from __future__ import annotations

import io
from typing import Any

import pytest
from nio import RoomSendResponse, UploadResponse

from tests.matrix.matrix_helpers import bot_settings, start_bot, unique
from tests.matrix.test_matrix_assistant import answered
from tests.matrix.test_matrix_e2e import encrypted_dm
from tests.media.assistant_fixture import media_bytes_in

pytestmark = pytest.mark.synapse


async def send_encrypted_file(
    person: Any, room_id: str, data: bytes, msgtype: str, body: str, **extra: Any
) -> str:
    """Upload `data` encrypted (AES-CTR, as Element does) and send the m.audio/m.image event."""
    mime = "audio/ogg" if msgtype == "m.audio" else "image/png"
    resp, keys = await person.client.upload(
        io.BytesIO(data), content_type="application/octet-stream", filesize=len(data), encrypt=True
    )
    assert isinstance(resp, UploadResponse), resp
    content = {
        "msgtype": msgtype,
        "body": body,
        "file": {"url": resp.content_uri, "mimetype": mime, **(keys or {})},
        "info": {"mimetype": mime, "size": len(data)},
        **extra,
    }
    sent = await person.client.room_send(room_id, "m.room.message", content, ignore_unverified_devices=True)
    assert isinstance(sent, RoomSendResponse), sent
    return sent.event_id


async def test_encrypted_voice_message_and_photo_are_read_answered_and_recalled(
    synapse, people, bots, tmp_path, real_assistant, sister_note: bytes, receipt_png: bytes
):
    alice = await people("alice", encrypted=True)
    account = synapse.register(unique("confidante"))
    settings = bot_settings(synapse, account, tmp_path / "data", max_new_tokens=8, temperature=0.0)
    assistant = real_assistant(settings)
    await start_bot(assistant, settings, bots)
    bot_id = account.user_id
    room_id = await encrypted_dm(alice, bot_id)
    shown = len(await answered(alice, bot_id, room_id, 0, settle=0.2))  # the intro

    voice = {"org.matrix.msc3245.voice": {}, "org.matrix.msc1767.audio": {"duration": 3000}}
    await send_encrypted_file(alice, room_id, sister_note, "m.audio", "Voice message", **voice)
    shown = len(await answered(alice, bot_id, room_id, shown, settle=0.5))
    assert "(voice note)" in assistant.engine.last_prompt_text()
    assert "Norway" in assistant.engine.last_prompt_text()

    await send_encrypted_file(alice, room_id, receipt_png, "m.image", "the receipt", filename="receipt.png")
    shown = len(await answered(alice, bot_id, room_id, shown, settle=0.5))
    await alice.say(room_id, "What was on that invoice?")
    await answered(alice, bot_id, room_id, shown, settle=0.5)
    prompt = assistant.engine.last_prompt_text()
    assert "(photo) the receipt" in prompt and "4721" in prompt
    assert media_bytes_in(settings.data_dir, sister_note, receipt_png) == []
