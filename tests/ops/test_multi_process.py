"""Two `confidante run` processes on one data dir and one Redis, behind a load balancer (this
test: Telegram webhook updates sent to either process in turn). One person's messages are
answered in the order they came, each exactly once, nothing is lost; and when one process is
SIGKILLed mid-reply the other answers what it left (core/recovery.py, README "Several chat
processes")."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import httpx
import lancedb

from tests.crash_checks import complete, free_port, inbox_states, stored_replies, until
from tests.crash_runner import kill_group, spawn
from tests.telegram.fake_bot_api import TOKEN, FakeBotAPI, group_chat, message, private_chat, user

SECRET = "multi-process-test"
MENTION = "@ConfidanteTestBot"
PEOPLE = [user(700 + i, f"Pat{i}") for i in range(2)]
GROUP = group_chat(-100700, "Two processes")
REDIS_URL = f"redis://127.0.0.1:6379/{os.environ.get('CONFIDANTE_TEST_REDIS_DB', '9')}"


def env(api: FakeBotAPI, data, hook: int) -> dict[str, str]:
    return {
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "CONFIDANTE_TELEGRAM_API_URL": api.base_url,
        "CONFIDANTE_TELEGRAM_WEBHOOK_URL": "https://bot.example.org/tg",
        "CONFIDANTE_TELEGRAM_WEBHOOK_SECRET": SECRET,
        "CONFIDANTE_TELEGRAM_WEBHOOK_PORT": str(hook),
        "CONFIDANTE_TELEGRAM_EDIT_INTERVAL": "0.2",
        "CONFIDANTE_DATA_DIR": str(data),
        "CONFIDANTE_BROKER_URL": REDIS_URL,  # the shared Redis; no worker needed here
        "CONFIDANTE_OPS_PORT": "0",
        "CONFIDANTE_MAX_NEW_TOKENS": "16",
        "CONFIDANTE_TEMPERATURE": "0",
        "CONFIDANTE_RATE_PER_MINUTE_PERSON": "1000",
    }


async def test_two_processes_keep_order_answer_once_and_survive_a_kill(tmp_path):
    api = FakeBotAPI()
    await api.start()
    data = tmp_path / "data"
    hooks = [free_port(), free_port()]
    procs = [spawn(env(api, data, port), str(tmp_path / f"run{i}.log")) for i, port in enumerate(hooks)]
    sent: list[dict] = []  # every message, in the order it was sent
    update_ids = iter(range(1, 10**6))
    mids = iter(range(5000, 10**6))
    try:
        async with httpx.AsyncClient(timeout=30) as http:

            async def post(to: int, msg: dict) -> None:
                api.remember_chat(msg["chat"])
                api._received[(msg["chat"]["id"], msg["message_id"])] = msg  # the fake quotes it
                body = json.dumps({"update_id": next(update_ids), "message": msg})
                headers = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": SECRET}
                (
                    await http.post(f"http://127.0.0.1:{hooks[to]}/tg", content=body, headers=headers)
                ).raise_for_status()
                sent.append(msg)

            async def listening(port: int) -> bool:
                try:
                    return (await http.post(f"http://127.0.0.1:{port}/tg", content="{}")).status_code == 401
                except httpx.HTTPError:
                    return False

            for port in hooks:
                deadline = asyncio.get_running_loop().time() + 180
                while not await listening(port):
                    assert asyncio.get_running_loop().time() < deadline, "a process did not start"
                    assert all(p.poll() is None for p in procs)
                    await asyncio.sleep(0.5)

            async def round_of(n: int, first: int) -> None:
                """Each person writes `n` messages in a row (direct chat), and two people in the
                group, each message to the other process than the one before."""
                to = first
                for i in range(n):
                    for person in PEOPLE:
                        text = f"Message {i} from {person['first_name']}?"
                        await post(to, message(private_chat(person), person, text, message_id=next(mids)))
                        to = 1 - to
                    who = PEOPLE[i % 2]
                    text = f"{MENTION} group message {i}?"
                    await post(to, message(GROUP, who, text, message_id=next(mids), mention=MENTION))
                    to = 1 - to

            def keys() -> list[tuple[str, str, str]]:
                return [("telegram", str(m["chat"]["id"]), str(m["message_id"])) for m in sent]

            def all_answered() -> bool:
                states = inbox_states(data)
                return all(states.get(k) == "answered" for k in keys())

            await round_of(3, first=0)
            await until(all_answered, 120)

            # again, and process 0 is killed while replies are streaming
            before = len(sent)
            await round_of(3, first=1)
            mine = _run_of(data, procs[0].pid)
            await until(lambda: _replying(data, mine), 60)
            kill_group(procs[0])
            left = sum(1 for k in keys()[before:] if inbox_states(data).get(k) != "answered")
            await until(all_answered, 120)
            await asyncio.sleep(1.0)  # a duplicate would show up here
            procs[1].send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(procs[1].wait, 60) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                kill_group(proc)
        await api.stop()

    stored = stored_replies(data, "telegram")
    for chat in [*(private_chat(p) for p in PEOPLE), GROUP]:
        asked = [m for m in sent if m["chat"]["id"] == chat["id"]]
        shown = api.bot_messages(chat["id"])
        assert len(shown) == len(asked), f"{chat['id']}: {len(asked)} messages, {len(shown)} answers"
        for msg, answer in zip(asked, shown, strict=True):  # in the order asked
            if chat["id"] < 0:
                assert answer["reply_to_message"]["message_id"] == msg["message_id"]
            expected = stored[(str(chat["id"]), str(msg["message_id"]))]
            assert complete(answer.get("text", ""), expected), (
                f"answer {answer['message_id']} is not the reply to {msg['message_id']}: out of order"
            )
    late = sum(
        1
        for chat_id in {m["chat"]["id"] for m in sent}
        for a in api.bot_messages(chat_id)
        if a["text"].startswith("(Sorry this is late")
    )
    assert late >= 1 and left >= 1, "the kill left something that the other process answered"
    # nothing lost: every message and its answer are in LanceDB (the killed process's journal
    # was taken over by the other one)
    rows = lancedb.connect(str(data / "lancedb")).open_table("turns").to_arrow().to_pylist()
    have = {(r["chat_id"], r["message_id"], r["role"]) for r in rows}
    for msg in sent:
        for role in ("user", "assistant"):
            assert (str(msg["chat"]["id"]), str(msg["message_id"]), role) in have
    print(f"\ntwo processes: {len(sent)} messages, {left} left unanswered by the kill, {late} answered late")


def _run_of(data, pid: int) -> str:
    import sqlite3

    db = sqlite3.connect(data / "inbox.sqlite3")
    try:
        return db.execute("SELECT run FROM runs WHERE pid = ?", (pid,)).fetchone()[0]
    finally:
        db.close()


def _replying(data, run: str) -> bool:
    import sqlite3

    db = sqlite3.connect(data / "inbox.sqlite3")
    try:
        return (
            db.execute("SELECT 1 FROM inbox WHERE run = ? AND state = 'replying'", (run,)).fetchone()
            is not None
        )
    finally:
        db.close()
