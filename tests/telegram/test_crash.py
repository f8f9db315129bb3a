"""A crash loses no message: `confidante run` against the fake Bot API (getUpdates confirms an
update only with a later offset, as Telegram does), SIGKILLed with replies mid-stream and
others queued, restarted on the same data dir; every message gets exactly one complete answer."""

from __future__ import annotations

import asyncio
import signal

from tests.crash_checks import complete, inbox_states, stored_replies
from tests.crash_runner import kill_group, spawn
from tests.telegram.fake_bot_api import TOKEN, FakeBotAPI, group_chat, message, private_chat, user

MENTION = "@ConfidanteTestBot"
PEOPLE = [user(300 + i, f"Person{i}") for i in range(8)]
GROUP = group_chat(-100900, "Crash club")
ASKERS = [user(400 + i, f"Member{i}") for i in range(3)]


def env(api: FakeBotAPI, data_dir) -> dict[str, str]:
    return {
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "CONFIDANTE_TELEGRAM_API_URL": api.base_url,
        "CONFIDANTE_DATA_DIR": str(data_dir),
        "CONFIDANTE_TELEGRAM_POLL_TIMEOUT": "1",
        "CONFIDANTE_TELEGRAM_EDIT_INTERVAL": "0.2",
        "CONFIDANTE_MAX_NEW_TOKENS": "24",
        "CONFIDANTE_TEMPERATURE": "0",
        "CONFIDANTE_SHUTDOWN_GRACE_SECONDS": "20",
    }


def answers(api: FakeBotAPI, sent: dict[int, dict]) -> dict[int, list[str]]:
    """Per message asked: the texts of the bot messages answering it."""
    out: dict[int, list[str]] = {}
    for key, msg in sent.items():
        chat_id = msg["chat"]["id"]
        if chat_id > 0:  # one direct chat per person, one message each
            shown = api.bot_messages(chat_id)
        else:
            shown = [
                m
                for m in api.bot_messages(chat_id)
                if m.get("reply_to_message", {}).get("message_id") == msg["message_id"]
            ]
        out[key] = [m.get("text", "") for m in shown]
    return out


async def test_sigkill_mid_stream_then_restart_answers_every_message_once(fake_api: FakeBotAPI, tmp_path):
    data, log = tmp_path / "data", tmp_path / "run.log"
    sent: dict[int, dict] = {}

    async def ask(chat: dict, who: dict, text: str, **kw) -> dict:
        update = await fake_api.push({"message": message(chat, who, text, **kw)})
        sent[update["update_id"]] = update["message"]
        return update

    def keys(messages) -> list[tuple[str, str, str]]:
        return [("telegram", str(m["chat"]["id"]), str(m["message_id"])) for m in messages]

    proc = spawn(env(fake_api, data), str(log))
    try:
        await fake_api.wait_for(lambda: fake_api.of("getUpdates"), timeout=120)
        early = [await ask(private_chat(p), p, f"Early question {i}?") for i, p in enumerate(PEOPLE[:2])]
        await fake_api.wait_for(
            lambda: all(inbox_states(data).get(k) == "answered" for k in keys(sent.values())), timeout=60
        )
        for i, person in enumerate(PEOPLE[2:]):
            await ask(private_chat(person), person, f"Direct question {i}?")
        for i, person in enumerate(ASKERS):  # one group: answered one after another, so queued
            await ask(GROUP, person, f"{MENTION} group question {i}?", mention=MENTION)
        # mid-stream: drafts (direct chats) and a group message being edited as it grows
        await fake_api.wait_for(
            lambda: len(fake_api.of("sendMessageDraft")) >= 6 and fake_api.of("editMessageText", GROUP["id"]),
            timeout=60,
        )
        confirmed = max(int(c.params.get("offset") or 0) for c in fake_api.of("getUpdates"))
        kill_group(proc)
        assert confirmed > max(sent), "Telegram was told every update had arrived"
        states = inbox_states(data)
        done_before = sum(1 for k in keys(sent.values()) if states.get(k) == "answered")
        shown_before = sum(1 for texts in answers(fake_api, sent).values() if texts)
        assert done_before < len(sent), "the kill came before every answer was out"

        proc = spawn(env(fake_api, data), str(log))
        await fake_api.wait_for(
            lambda: all(inbox_states(data).get(k) == "answered" for k in keys(sent.values())), timeout=120
        )
        # Telegram delivering an answered message again (a new update for the same message)
        await fake_api.push({"message": early[0]["message"]})
        await asyncio.sleep(1.5)  # a duplicate would show up here
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0
    finally:
        if proc.poll() is None:
            kill_group(proc)

    after = answers(fake_api, sent)
    stored = stored_replies(data, "telegram")
    print(
        f"\ntelegram: {len(sent)} messages; before the kill: {done_before} answered, "
        f"{shown_before - done_before} partly shown, {len(sent) - shown_before} not shown; after the "
        f"restart: {sum(1 for t in after.values() if len(t) == 1)} with exactly one answer"
    )
    for key, msg in sent.items():
        texts = after[key]
        assert len(texts) == 1, f"message {msg['text']!r} has {len(texts)} answers"
        reply = stored.get((str(msg["chat"]["id"]), str(msg["message_id"])), "")
        assert complete(texts[0], reply), (texts[0], reply)
    late = sum(1 for t in after.values() if t[0].startswith("(Sorry this is late"))
    assert late == len(sent) - done_before
    text = log.read_text()
    for msg in sent.values():
        assert msg["text"] not in text and msg["from"]["first_name"] not in text
