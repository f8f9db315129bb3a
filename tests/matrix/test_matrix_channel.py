"""The Matrix channel against a real Synapse, with a scripted core: what reaches Matrix and
what the channel hands to the core. The real Assistant is in test_matrix_assistant.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nio import RoomMemberEvent, RoomMessageText, TypingNoticeEvent

from tests.channel_fakes import ScriptedAssistant
from tests.matrix.matrix_helpers import (
    bot_settings,
    content,
    final_text,
    is_edit,
    start_bot,
    unique,
)

pytestmark = pytest.mark.synapse


def bot_message(bot_id: str, room_id: str, *, first_only: bool = True):
    def pred(r: str, e: Any) -> bool:
        return r == room_id and isinstance(e, RoomMessageText) and e.sender == bot_id and not is_edit(e)

    return pred


def shows(bot_id: str, room_id: str, text: str):
    """A bot message or edit whose shown text contains `text`."""

    def pred(r: str, e: Any) -> bool:
        if r != room_id or not isinstance(e, RoomMessageText) or e.sender != bot_id:
            return False
        c = content(e)
        body = c["m.new_content"]["body"] if is_edit(e) else c.get("body", "")
        return text in body

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
        lambda r, e: bot_message(account.user_id, room_id)(r, e) and e.event_id != intro.event_id,
        what="answer",
    )
    await asyncio.sleep(0.5)
    await alice.sync(0)
    assert final_text(alice, room_id, account.user_id, answer.event_id) == "You said: hello there"
    msg = assistant.seen[-1]
    assert (msg.platform, msg.chat_id, msg.sender_id, msg.message_id) == (
        "matrix",
        room_id,
        alice.user_id,
        asked,
    )
    assert msg.chat_kind == "direct" and msg.addressed
    assert "m.relates_to" not in content(answer)  # a DM answer is a plain message

    # the person leaves: nobody is left to talk to, so the bot leaves and the chat is closed
    await alice.client.room_leave(room_id)
    for _ in range(100):
        if assistant.closed:
            break
        await asyncio.sleep(0.1)
    assert assistant.closed == [("matrix", room_id)]


async def test_invite_from_disallowed_user_is_declined(synapse, people, bots, tmp_path):
    alice, mallory = await people("alice"), await people("mallory")
    account = synapse.register(unique("confidante"))
    assistant = ScriptedAssistant()
    settings = bot_settings(synapse, account, tmp_path, matrix={"allowed_inviters": [alice.user_id]})
    await start_bot(assistant, settings, bots)

    room_id = await mallory.create_room([account.user_id], direct=True)
    await mallory.wait_for(
        lambda r, e: (
            r == room_id
            and isinstance(e, RoomMemberEvent)
            and e.state_key == account.user_id
            and e.membership == "leave"
        ),
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
        lambda r, e: (
            r == room_id
            and isinstance(e, RoomMemberEvent)
            and e.state_key == bob.user_id
            and e.membership == "join"
        )
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
        **{
            "m.relates_to": {
                "rel_type": "m.thread",
                "event_id": root,
                "is_falling_back": True,
                "m.in_reply_to": {"event_id": root},
            }
        },
    )
    threaded = await alice.wait_for(answers_to(bot_id, room_id, in_thread), what="answer in thread")
    rel = content(threaded)["m.relates_to"]
    assert rel["rel_type"] == "m.thread" and rel["event_id"] == root
    # a reply to one of the bot's messages
    follow = await bob.say(
        room_id, "and for dinner?", **{"m.relates_to": {"m.in_reply_to": {"event_id": reply.event_id}}}
    )
    await alice.wait_for(answers_to(bot_id, room_id, follow), what="answer to a reply")

    await alice.no_event(answers_to(bot_id, room_id, plain), 1.0)
    by_id = {m.message_id: m for m in assistant.seen}
    assert by_id[plain].addressed is False and by_id[plain].chat_kind == "group"
    assert by_id[mentioned].addressed and by_id[follow].addressed and by_id[follow].reply_to == reply.event_id
    assert by_id[in_thread].thread_id == root
    assert by_id[in_thread].text == "summarise this thread please"  # the mention is stripped


async def test_streamed_reply_is_one_message_edited_at_most_about_once_a_second(
    synapse, people, bots, tmp_path
):
    words = [f"word{i}" for i in range(60)]
    assistant = ScriptedAssistant(
        reply=lambda m: " ".join(words) + " <b>not bold</b> **bold**", delay=0.05, chunk=2
    )
    alice = await people("alice")
    account = synapse.register(unique("confidante"))
    await start_bot(
        assistant, bot_settings(synapse, account, tmp_path, matrix={"edit_interval_seconds": 1.0}), bots
    )
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
    typing = [e.users for r, e in alice.ephemeral if r == room_id and isinstance(e, TypingNoticeEvent)]
    started = [i for i, users in enumerate(typing) if account.user_id in users]
    assert started, "no typing notice while the reply was written"
    await alice.no_event(lambda r, e: False, 0.5)
    typing = [e.users for r, e in alice.ephemeral if r == room_id and isinstance(e, TypingNoticeEvent)]
    assert account.user_id not in typing[-1]  # and it stopped afterwards
    new = content(last)["m.new_content"]
    assert new["format"] == "org.matrix.custom.html"
    assert (
        "&lt;b&gt;not bold&lt;/b&gt;" in new["formatted_body"]
        and "<strong>bold</strong>" in new["formatted_body"]
    )


async def test_very_long_reply_is_split_below_the_event_size_limit(synapse, people, bots, tmp_path):
    paragraph = 'Ünïcödé & <tags> "quotes" ' * 40
    long_text = "\n\n".join(f"{i}: {paragraph}" for i in range(60)) + "\n\nTHE END."  # ~65 kB
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


async def test_restart_keeps_device_and_neither_reanswers_nor_drops(synapse, people, bots, tmp_path):
    assistant = ScriptedAssistant()
    alice = await people("alice")
    account = synapse.register(unique("confidante"))
    settings = bot_settings(synapse, account, tmp_path)
    bot = await start_bot(assistant, settings, bots)
    room_id, intro = await dm_with_bot(alice, account.user_id)
    before = await alice.say(room_id, "first question")
    await alice.wait_for(
        lambda r, e: bot_message(account.user_id, room_id)(r, e) and e.event_id != intro.event_id
    )
    device = bot.client.device_id
    await asyncio.sleep(0.5)  # let the final edit land
    await bot.stop()

    while_down = await alice.say(room_id, "asked while you were away")
    bot2 = await start_bot(assistant, settings, bots)
    assert bot2.client.device_id == device  # same device: the crypto identity survives
    await alice.wait_for(
        shows(account.user_id, room_id, "asked while you were away"),
        what="answer to the message sent while down",
    )
    await alice.no_event(shows(account.user_id, room_id, "first question"), 1.5)
    handled = [m.message_id for m in assistant.seen]
    assert handled.count(before) == 1 and handled.count(while_down) == 1


async def test_messages_older_than_the_catchup_age_are_recorded_not_answered(synapse, people, bots, tmp_path):
    assistant = ScriptedAssistant()
    alice = await people("alice")
    account = synapse.register(unique("confidante"))
    settings = bot_settings(synapse, account, tmp_path, matrix={"catchup_max_age_seconds": 1})
    bot = await start_bot(assistant, settings, bots)
    room_id, _ = await dm_with_bot(alice, account.user_id)
    await bot.stop()

    old = await alice.say(room_id, "a stale question")
    await asyncio.sleep(1.5)
    await start_bot(assistant, settings, bots)
    await alice.no_event(shows(account.user_id, room_id, "stale"), 1.5)
    seen = [m for m in assistant.seen if m.message_id == old]
    assert len(seen) == 1 and seen[0].addressed is False


async def test_redaction_and_kick_reach_the_core(synapse, people, bots, tmp_path):
    assistant = ScriptedAssistant()
    alice, bob, account, bot, room_id = await group_with_bot(synapse, people, bots, tmp_path, assistant)
    secret = await alice.say(room_id, "my door code is 4711")
    resp = await alice.client.room_redact(room_id, secret, reason="oops")
    assert not hasattr(resp, "status_code") or resp.status_code is None
    for _ in range(50):
        if assistant.redacted:
            break
        await asyncio.sleep(0.1)
    assert assistant.redacted == [("matrix", room_id, secret)]

    await alice.client.room_kick(room_id, account.user_id, reason="bye")
    for _ in range(50):
        if assistant.closed:
            break
        await asyncio.sleep(0.1)
    assert assistant.closed == [("matrix", room_id)]


async def test_rate_limits_are_waited_out(synapse, people, bots, tmp_path):
    """Synapse answers M_LIMIT_EXCEEDED with retry_after_ms; the whole reply still arrives."""
    words = [f"w{i}" for i in range(12)]
    assistant = ScriptedAssistant(reply=lambda m: " ".join(words), delay=0.05, chunk=1)
    alice = await people("alice")
    account = synapse.register(unique("confidante"))
    bot = await start_bot(
        assistant, bot_settings(synapse, account, tmp_path, matrix={"edit_interval_seconds": 0.0}), bots
    )
    room_id, _ = await dm_with_bot(alice, account.user_id)
    synapse.set_message_ratelimit(account.user_id, per_second=2, burst=2)

    await alice.say(room_id, "go")
    await alice.wait_for(
        lambda r, e: is_edit(e) and content(e)["m.new_content"]["body"] == " ".join(words),
        timeout=60,
        what="whole reply",
    )
    assert bot.outbox.rate_limited >= 1


async def test_homeserver_outage_is_retried_with_backoff(synapse, people, bots, tmp_path):
    from tests.matrix.matrix_helpers import Proxy

    proxy = Proxy(synapse.port)
    await proxy.start()
    assistant = ScriptedAssistant()
    alice = await people("alice")
    account = synapse.register(unique("confidante"))
    bot = await start_bot(
        assistant, bot_settings(synapse, account, tmp_path, matrix={"homeserver": proxy.url}), bots
    )
    room_id, _ = await dm_with_bot(alice, account.user_id)

    await proxy.cut()
    await asyncio.sleep(1.5)
    await alice.say(room_id, "are you there?")
    await asyncio.sleep(1.0)
    assert bot.sync_failures >= 2  # it kept trying, backing off
    await proxy.start()  # the homeserver is back on the same address
    await alice.wait_for(shows(account.user_id, room_id, "are you there"), what="answer after outage")
    await proxy.stop()


async def test_run_matrix_runs_until_cancelled(synapse, people, tmp_path):
    from bots.matrix import run_matrix

    alice = await people("alice")
    account = synapse.register(unique("confidante"))
    task = asyncio.create_task(run_matrix(ScriptedAssistant(), bot_settings(synapse, account, tmp_path)))
    room_id, _ = await dm_with_bot(alice, account.user_id)
    await alice.say(room_id, "ping")
    await alice.wait_for(shows(account.user_id, room_id, "ping"), what="answer")
    state_file = tmp_path / "matrix" / "state.json"
    # alice can see the answer a moment before the bot has read its own send's response
    for _ in range(100):
        if '"pending": {}' in state_file.read_text():
            break
        await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert '"pending": {}' in state_file.read_text()  # stopped cleanly, nothing left half-answered


async def test_bad_credentials_say_what_to_set(synapse, tmp_path):
    from bots.matrix import MatrixBot, MatrixConfigError

    account = synapse.register(unique("confidante"))
    with pytest.raises(MatrixConfigError, match="CONFIDANTE_MATRIX_PASSWORD"):
        await MatrixBot(
            ScriptedAssistant(), bot_settings(synapse, account, tmp_path, matrix={"password": "wrong"})
        ).start()
    with pytest.raises(MatrixConfigError, match="ACCESS_TOKEN or CONFIDANTE_MATRIX_PASSWORD"):
        await MatrixBot(
            ScriptedAssistant(), bot_settings(synapse, account, tmp_path / "b", matrix={"password": None})
        ).start()
    with pytest.raises(MatrixConfigError, match="MATRIX_HOMESERVER"):
        MatrixBot(
            ScriptedAssistant(), bot_settings(synapse, account, tmp_path / "c", matrix={"homeserver": None})
        )
    # a token works as well as a password, and the same device id is kept
    bot = MatrixBot(
        ScriptedAssistant(),
        bot_settings(
            synapse, account, tmp_path / "d", matrix={"password": None, "access_token": account.access_token}
        ),
    )
    await bot.start()
    assert bot.client.device_id == account.device_id
    await bot.stop()


async def test_an_unexpected_error_in_a_sync_does_not_stop_the_bot(synapse, people, bots, tmp_path):
    assistant = ScriptedAssistant()
    alice = await people("alice")
    account = synapse.register(unique("confidante"))
    bot = await start_bot(assistant, bot_settings(synapse, account, tmp_path), bots)
    room_id, _ = await dm_with_bot(alice, account.user_id)
    original = bot._retry_undecrypted
    failures = []

    def broken_once() -> None:
        if not failures:
            failures.append(1)
            raise RuntimeError("a bug in sync handling")
        original()

    bot._retry_undecrypted = broken_once
    await alice.say(room_id, "still there?")
    await alice.wait_for(shows(account.user_id, room_id, "still there?"), what="answer after the error")
    assert failures and not bot._sync_task.done()
