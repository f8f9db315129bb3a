"""Who may talk, how fast, how much: allow-lists, admins, rate limits with one notice, and
per-platform limits on message and reply length, all through the real Assistant."""

from __future__ import annotations

import json
import stat

import pytest

from core.access import REFUSAL, SLOW_DOWN, Access
from core.assistant import Assistant, build_assistant
from core.config import Settings
from core.memory.records import Person
from tests.helpers import RecordingEngine, dm, group, say

COUNTS: dict[str, int] = {}


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print("\naccess:", json.dumps(COUNTS))


def _count(name: str, n: int = 1) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + n


class Clock:
    now = 5000.0

    def __call__(self) -> float:
        return self.now


async def test_strangers_hear_one_refusal_and_leave_no_trace(assistant: Assistant) -> None:
    a = assistant
    a.settings.access = "users"
    a.settings.allowed_users = ["telegram:ann"]
    before = a.store.counts()
    replies = [await say(a, dm(f"hi {i}", person="mallory", platform="telegram")) for i in range(5)]
    assert replies[0] == REFUSAL and replies[1:] == [None] * 4
    assert await say(a, group("hello all", "mallory", chat_id="-9")) is None
    assert await say(a, group("/stats", "mallory", chat_id="-9")) is None
    _count("stranger messages", 7)
    assert a.store.counts() == before, "a refused message created rows"
    assert a.store.person_for("telegram", "mallory") is None
    assert (await say(a, dm("hello", person="ann", platform="telegram"))) != REFUSAL


@pytest.mark.parametrize(
    "chat_id,allowed",
    [
        ("T1:C1", True),
        ("T1:D9", True),
        ("T10:C1", False),
        ("T2:C1", False),
        ("T1 :C1", False),
        ("t1:C1", False),
    ],
)
def test_workspace_allow_list_matches_exactly(chat_id: str, allowed: bool) -> None:
    settings = Settings(access="chats", allowed_chats=["slack:T1", "telegram:-100"], _env_file=None)
    access = Access(settings)
    team = chat_id.split(":", 1)[0]  # what bots/slack_events.py reports as the chat's workspace
    msg = dm("hi", person="T1:U1", platform="slack", chat_id=chat_id, workspace=team)
    assert access.allowed(msg) is allowed
    assert not access.allowed(group("hi", "x", chat_id="-1001"))
    assert access.allowed(group("hi", "x", chat_id="-100"))
    _count("allow-list lookalikes")


async def test_admins_see_counts_never_content(assistant: Assistant) -> None:
    a = assistant
    a.settings.admins = ["telegram:root"]
    await say(a, dm("my diary entry DIARY-OCELOT", person="ann", platform="telegram"))
    denied = await say(a, dm("/stats", person="ann", platform="telegram"))
    assert "admins" in denied and "turns" not in denied
    stats = await say(a, dm("/stats", person="root", platform="telegram"))
    assert "turns" in stats and "DIARY-OCELOT" not in stats and "ann" not in stats
    _count("stats probes", 2)


async def test_rate_limit_gives_one_notice_then_silence_then_recovers(assistant: Assistant) -> None:
    a = assistant
    a.access.clock = clock = Clock()
    a.settings.rate_burst_person, a.settings.rate_per_minute_person = 3, 6.0
    replies = [await say(a, dm(f"msg {i}", person="ann", platform="telegram")) for i in range(10)]
    answered = [r for r in replies if r and r != SLOW_DOWN]
    assert len(answered) == 3 and replies.count(SLOW_DOWN) == 1 and replies.count(None) == 6
    _count("flood messages", 10)
    clock.now += 30  # 6 per minute: three more tokens
    later = [await say(a, dm(f"later {i}", person="ann", platform="telegram")) for i in range(5)]
    assert len([r for r in later if r and r != SLOW_DOWN]) == 3 and later.count(SLOW_DOWN) == 1


async def test_group_flood_is_limited_per_chat(assistant: Assistant) -> None:
    a = assistant
    a.access.clock = Clock()
    a.settings.rate_burst_chat, a.settings.rate_per_minute_chat = 4, 1.0
    replies = [await say(a, group(f"q {i}", f"member{i}", chat_id="-7")) for i in range(12)]
    assert len([r for r in replies if r and r != SLOW_DOWN]) == 4 and replies.count(SLOW_DOWN) == 1
    _count("group flood messages", 12)


def test_many_throwaway_ids_do_not_grow_memory() -> None:
    access = Access(Settings(_env_file=None), clock=(clock := Clock()))
    for i in range(5000):
        access.throttle(dm("hi", person=f"bot{i}", platform="telegram", chat_id=f"c{i}"), Person(f"bot{i}"))
        clock.now += 1  # by the time the last ones arrive the first buckets have refilled
    assert access.bucket_count() < 2000
    _count("throwaway ids", 5000)


async def test_message_length_limit_per_platform(assistant: Assistant) -> None:
    a = assistant
    a.settings.message_chars_by_platform = {"telegram": 100}
    long = "x" * 101
    reply = await say(a, dm(long, person="ann", platform="telegram", message_id="long-1"))
    assert "up to 100" in reply and "kept" in reply
    stored = a.store.turns_by_message("telegram", "ann", "long-1")
    assert stored[0].text == long, "the long message was not kept"
    ok = await say(a, dm("x" * 101, person="ann", platform="slack", chat_id="T1:D1"))
    assert "up to" not in (ok or "")
    _count("oversized messages", 2)


async def test_reply_length_limit_per_platform(assistant: Assistant, engine: RecordingEngine) -> None:
    a = assistant
    natural = await say(a, dm("tell me a long story", person="ann", platform="slack", chat_id="T1:D1"))
    a.settings.reply_chars_by_platform = {"telegram": 2}
    cut = await say(a, dm("tell me a long story", person="ann", platform="telegram", message_id="r-1"))
    assert len(cut) <= 2
    if len(natural) > 2:
        assert len(cut) == 2
    stored = [t for t in a.store.turns_by_message("telegram", "ann", "r-1") if t.role == "assistant"]
    assert all(len(t.text) <= 2 for t in stored)


def test_data_dir_is_private(tmp_path, base_engine) -> None:
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    for path in (tmp_path / "new" / "data", existing):
        settings = Settings(data_dir=path, _env_file=None)
        build_assistant(settings, engine=base_engine).close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
        assert (path / "lancedb").exists()
