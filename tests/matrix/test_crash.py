"""A crash loses no message: `confidante run` on the real Synapse (the sync token moves on once
an event is recorded), SIGKILLed with replies mid-stream and others queued, restarted on the
same data dir; every message gets exactly one complete answer."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest
from nio import RoomMessageText

from tests.crash_checks import complete, inbox_states, stored_replies, until
from tests.crash_runner import kill_group, spawn
from tests.matrix.matrix_helpers import content, final_text, is_edit, unique

pytestmark = pytest.mark.synapse


def env(hs: Any, account: Any, data_dir) -> dict[str, str]:
    return {
        "CONFIDANTE_MATRIX_HOMESERVER": hs.url,
        "CONFIDANTE_MATRIX_USER_ID": account.user_id,
        "CONFIDANTE_MATRIX_PASSWORD": account.password,
        "CONFIDANTE_MATRIX_EDIT_INTERVAL_SECONDS": "0.3",
        "CONFIDANTE_MATRIX_SYNC_TIMEOUT_MS": "1000",
        "CONFIDANTE_MATRIX_BACKOFF_MAX_SECONDS": "1",
        "CONFIDANTE_DATA_DIR": str(data_dir),
        "CONFIDANTE_MAX_NEW_TOKENS": "24",
        "CONFIDANTE_TEMPERATURE": "0",
        "CRASH_DELTA_DELAY": "0.06",
    }


async def catch_up(person: Any) -> None:
    """Everything since the person's last sync (a default sync would drop all but the last few
    events of a busy room, edits included)."""
    resp = await person.client.sync(timeout=0, sync_filter={"room": {"timeline": {"limit": 1000}}})
    for room_id, info in resp.rooms.join.items():
        person.events.extend((room_id, event) for event in info.timeline.events)


def bot_events(person: Any, bot_id: str, room_id: str) -> list[Any]:
    return [e for e in person.from_user(bot_id, room_id) if isinstance(e, RoomMessageText)]


async def test_sigkill_mid_stream_then_restart_answers_every_message_once(synapse, people, tmp_path):
    data, log = tmp_path / "data", tmp_path / "run.log"
    account = synapse.register(unique("confidante"))
    bot = account.user_id
    asked: list[tuple[Any, str, str, str]] = []  # (person, room, event id, text)

    async def ask(person: Any, room_id: str, text: str, **extra: Any) -> None:
        asked.append((person, room_id, await person.say(room_id, text, **extra), text))

    def keys(items) -> list[tuple[str, str, str]]:
        return [("matrix", room_id, event_id) for _, room_id, event_id, _ in items]

    def answered(items) -> bool:
        states = inbox_states(data)
        return all(states.get(k) == "answered" for k in keys(items))

    def answers(person: Any, room_id: str, event_id: str, direct: bool) -> list[str]:
        """The bot's messages answering one question (a direct room holds one question)."""
        found = []
        for e in bot_events(person, bot, room_id):
            if is_edit(e) or e.body.startswith("Hi"):  # edits and the introduction
                continue
            quoted = (content(e).get("m.relates_to") or {}).get("m.in_reply_to", {}).get("event_id")
            if direct or quoted == event_id:
                found.append(final_text(person, room_id, bot, e.event_id))
        return found

    proc = spawn(env(synapse, account, data), str(log))
    try:
        direct_rooms: dict[str, Any] = {}
        persons = [await people(f"p{i}") for i in range(4)]
        await until(lambda: (data / "matrix" / "state.json").exists(), 120)
        for person in persons:
            room_id = await person.create_room([bot], direct=True)
            await person.wait_for(
                lambda r, e, room_id=room_id: r == room_id and getattr(e, "sender", "") == bot, what="intro"
            )
            direct_rooms[room_id] = person
        alice, bob = persons[0], persons[1]
        group = await alice.create_room([bot, bob.user_id], name="crash club")
        await bob.client.join(group)
        await alice.wait_for(lambda r, e: r == group and getattr(e, "sender", "") == bot, what="join")

        first = list(direct_rooms.items())[0]
        await ask(first[1], first[0], "Early question?")
        await until(lambda: answered(asked), 60)
        for room_id, person in list(direct_rooms.items())[1:]:
            await ask(person, room_id, "Direct question?")
        for i in range(3):  # one room: answered one after another, so queued
            await ask(alice, group, f"{bot} group question {i}?", **{"m.mentions": {"user_ids": [bot]}})

        async def mid_stream() -> bool:  # all received, and a bot message edited at least once
            await catch_up(alice)
            received = inbox_states(data)
            return all(k in received for k in keys(asked)) and any(
                is_edit(e) for e in bot_events(alice, bot, group)
            )

        for _ in range(200):
            if await mid_stream():
                break
        kill_group(proc)
        states = inbox_states(data)
        done_before = sum(1 for k in keys(asked) if states.get(k) == "answered")
        assert done_before < len(asked), "the kill came before every answer was out"

        proc = spawn(env(synapse, account, data), str(log))
        await until(lambda: answered(asked), 120)
        await asyncio.sleep(1.5)  # a duplicate would show up here
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0
    finally:
        if proc.poll() is None:
            kill_group(proc)

    for person in persons:
        await catch_up(person)
    stored = stored_replies(data, "matrix")
    after = [answers(p, room_id, event_id, room_id in direct_rooms) for p, room_id, event_id, _ in asked]
    print(
        f"\nmatrix: {len(asked)} messages; before the kill: {done_before} answered; after the restart: "
        f"{sum(1 for t in after if len(t) == 1)} with exactly one answer"
    )
    for (_, room_id, event_id, text), texts in zip(asked, after, strict=True):
        assert len(texts) == 1, f"message {text!r} has {len(texts)} answers: {texts}"
        assert complete(texts[0], stored.get((room_id, event_id), "")), (
            texts[0],
            stored.get((room_id, event_id)),
        )
    late = sum(1 for t in after if t[0].startswith("(Sorry this is late"))
    assert late == len(asked) - done_before
    logged = log.read_text()
    for _, _, _, text in asked:
        assert text.split(" ", 1)[-1] not in logged
