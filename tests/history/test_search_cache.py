"""The search cache (core/memory/hot.py) on real LanceDB: it answers like LanceDB, sees this
process's writes and other processes' writes, never returns what was forgotten or what belongs
to someone else, and stays within its byte bound."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.memory.records import PRIVATE, Memory, Turn, chat_scope
from core.memory.store import Search, Store

T0 = datetime(2024, 1, 1, tzinfo=UTC)
ROLES = ("user", "contact")
FACTS = [
    "I adopted a grey cat called Pixel",
    "My sister Marta moved to Utrecht last spring",
    "The Zephyrine rollout is due at the end of the quarter",
    "We had pho at Saigon Corner on Friday",
    "I started learning the cello in September",
    "Our flat in Leeds has a tiny kitchen",
    "I am training for the Berlin marathon",
    "The dentist appointment moved to Tuesday",
]


def turns_for(person: str, n: int = 40, *, scope: str = PRIVATE, prefix: str = "m") -> list[Turn]:
    return [
        Turn(
            person_id=person,
            platform="console",
            chat_id=person if scope == PRIVATE else "grp",
            message_id=f"{prefix}{i}",
            role="user",
            text=f"{FACTS[i % len(FACTS)]} ({person} {i})",
            ts=T0 + timedelta(days=i),
            visibility=scope,
        )
        for i in range(n)
    ]


def searches(store: Store, question: str, k: int = 10) -> list[Search]:
    [vector] = store.embed([question])
    return [
        Search("turns", k, vector=vector, roles=ROLES),
        Search("turns", k, text=question, roles=ROLES),
        Search("memories", k, vector=vector),
        Search("memories", k, text=question),
        Search(
            "turns",
            k,
            vector=vector,
            roles=ROLES,
            since=T0 + timedelta(days=10),
            until=T0 + timedelta(days=20),
        ),
    ]


def ids(lists) -> list[list[str]]:
    return [[h.item.id for h in hits] for hits in lists]


@pytest.fixture
def pair(tmp_path: Path, embedder) -> tuple[Store, Store]:
    """The same data twice: a store that searches through its cache, one that only asks LanceDB."""
    cached = Store(tmp_path / "db", embedder, read_consistency_interval=timedelta(0))
    cached.add_turns(
        [
            *turns_for("ana"),
            *turns_for("ben"),
            *turns_for("ana", 6, scope=chat_scope("tg", "grp"), prefix="g"),
        ]
    )
    cached.save_memories(
        [
            Memory(person_id="ana", kind="fact", text="Has a cat called Pixel", id="mem-ana-1"),
            Memory(person_id="ben", kind="fact", text="Has a cat called Pixel", id="mem-ben-1"),
        ]
    )
    cached.ensure_indexes()
    plain = Store(tmp_path / "db", embedder, search_cache_bytes=0, read_consistency_interval=timedelta(0))
    return cached, plain


def test_cache_answers_like_lancedb(pair) -> None:
    cached, plain = pair
    for question in ("what is my cat called", "when is the Zephyrine rollout due", "cello lessons"):
        got = cached.search_many("ana", [PRIVATE], searches(cached, question))
        want = plain.search_many("ana", [PRIVATE], searches(plain, question))
        assert "ana" in cached._hot  # answered from memory
        # vector lists are exact on both sides: the same rows (ties may swap neighbours)
        for i in (0, 2, 4):
            assert set(ids(got)[i]) == set(ids(want)[i])
            for a, b in zip(got[i], want[i], strict=True):
                assert a.distance == pytest.approx(b.distance, abs=1e-4)
        # full text: the same matching rows, the same best fact first (its copies tie)
        for i in (1, 3):
            assert set(ids(got)[i]) == set(ids(want)[i])
            assert [h.item.text.split(" (")[0] for h in got[i][:1]] == [
                h.item.text.split(" (")[0] for h in want[i][:1]
            ]


def test_cache_never_crosses_people_or_scopes(pair) -> None:
    cached, _ = pair
    for question in ("what is my cat called", "Berlin marathon", "' OR person_id = 'ben"):
        for hits in cached.search_many("ana", [PRIVATE], searches(cached, question)):
            assert all(h.item.person_id == "ana" and h.item.visibility == PRIVATE for h in hits)
        group = cached.search_many("ana", [chat_scope("tg", "grp")], searches(cached, question))
        assert all(h.item.visibility == chat_scope("tg", "grp") for hits in group for h in hits)
    assert "ben" not in cached._hot  # nothing of ben's was loaded for ana


def test_cache_sees_a_new_turn_and_forgets_a_deleted_one(pair) -> None:
    cached, _ = pair
    question = "where does my brother Tomasz live"
    cached.search_many("ana", [PRIVATE], searches(cached, question))  # load ana
    [new] = cached.add_turns and turns_for("ana", 1, prefix="new")
    new.text = "My brother Tomasz lives in Gdansk"
    cached.add_turns([new])
    got = cached.search_many("ana", [PRIVATE], searches(cached, question))
    assert ids(got)[0][0] == new.id and ids(got)[1][0] == new.id
    cached.delete_turns([new.id])
    assert new.id not in cached._hot.get("ana").parts["turns"].position  # gone from memory at once
    got = cached.search_many("ana", [PRIVATE], searches(cached, question))
    assert all(new.id not in lst for lst in ids(got))


def test_cache_sees_journaled_turns_once_written(tmp_path: Path, embedder) -> None:
    store = Store(tmp_path / "db", embedder, journal=tmp_path / "journal.jsonl")
    try:
        store.add_turns(turns_for("ana"))
        store.search_many("ana", [PRIVATE], searches(store, "cat"))
        [new] = turns_for("ana", 1, prefix="j")
        new.text = "The boiler engineer comes on Thursday"
        store.record_turns([new])
        store.settle()
        got = store.search_many("ana", [PRIVATE], searches(store, "when does the boiler engineer come"))
        assert ids(got)[1][0] == new.id
    finally:
        store.close()


def test_superseded_and_forgotten_memories_leave_the_cache(pair) -> None:
    cached, _ = pair
    question = "what is my cat called"
    assert ids(cached.search_many("ana", [PRIVATE], searches(cached, question)))[2] == ["mem-ana-1"]
    cached.save_memories(
        [
            Memory(person_id="ana", kind="fact", text="Has a cat called Pixel", id="mem-ana-1", valid_to=T0),
            Memory(person_id="ana", kind="fact", text="Has two cats, Pixel and Byte", id="mem-ana-2"),
        ]
    )
    assert ids(cached.search_many("ana", [PRIVATE], searches(cached, question)))[2] == ["mem-ana-2"]
    cached.delete_memories(["mem-ana-2"])
    assert ids(cached.search_many("ana", [PRIVATE], searches(cached, question)))[2] == []


def test_edited_turn_is_searched_by_its_new_text(pair) -> None:
    cached, _ = pair
    cached.search_many("ana", [PRIVATE], searches(cached, "cat"))
    assert cached.edit_turn("console", "ana", "m0", "Actually my cat is called Quasar")
    got = cached.search_many("ana", [PRIVATE], searches(cached, "Quasar"))
    [hit] = got[1]
    assert hit.item.message_id == "m0" and "Quasar" in hit.item.text
    assert not any(
        "Pixel" in h.item.text and getattr(h.item, "message_id", "") == "m0" for hits in got for h in hits
    )


WRITER = """
import sys
from datetime import UTC, datetime
from core.memory.embed import default_embedder
from core.memory.records import Memory, Turn
from core.memory.store import Store
store = Store(sys.argv[1], default_embedder(), search_cache_bytes=0)
store.save_memories([Memory(person_id="ana", kind="fact", text="Plays the theremin on Sundays", id="mem-ana-x")])
store.add_turns([Turn(person_id="ana", platform="console", chat_id="ana", message_id="x1", role="user",
                      text="I bought a theremin", ts=datetime(2024, 3, 1, tzinfo=UTC))])
store.delete_memories(["mem-ana-1"])
"""


def test_another_process_writes_are_seen(pair, tmp_path: Path) -> None:
    cached, _ = pair
    question = "theremin"
    before = cached.search_many("ana", [PRIVATE], searches(cached, question))
    assert "mem-ana-1" in ids(before)[2]
    subprocess.run(
        [sys.executable, "-c", WRITER, str(tmp_path / "db")],
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )
    after = cached.search_many("ana", [PRIVATE], searches(cached, question))
    assert ids(after)[3][:1] == ["mem-ana-x"]  # a worker's new memory
    assert "mem-ana-1" not in ids(after)[2]  # one another process forgot
    assert ids(after)[1][:1] == [Turn("ana", "console", "ana", "x1", "user", "").id]  # an import's turn


def test_forget_person_drops_the_entry(pair) -> None:
    cached, _ = pair
    cached.search_many("ana", [PRIVATE], searches(cached, "cat"))
    assert "ana" in cached._hot
    cached.forget_person("ana")
    assert "ana" not in cached._hot
    assert all(not hits for hits in cached.search_many("ana", [PRIVATE], searches(cached, "cat")))


def test_byte_bound_evicts_least_recently_used(tmp_path: Path, embedder) -> None:
    store = Store(tmp_path / "db", embedder)
    people = [f"p{i}" for i in range(6)]
    store.add_turns([t for p in people for t in turns_for(p, 60)])
    store.search_many("p0", [PRIVATE], searches(store, "cat"))
    one = store._hot.bytes
    bound = int(one * 3.5)
    store._hot.max_bytes = bound
    for p in people:
        store.search_many(p, [PRIVATE], searches(store, "cat"))
        assert store._hot.bytes <= bound
    assert len(store._hot) == 3
    assert [e.person_id for e in store._hot.entries()] == people[-3:]
    # an evicted person is still answered (loaded again)
    assert store.search_many("p0", [PRIVATE], searches(store, "cat"))[0]


def test_a_big_person_loads_in_the_background(tmp_path: Path, embedder) -> None:
    store = Store(tmp_path / "db", embedder, search_cache_sync_rows=10)
    store.add_turns(turns_for("ana"))
    store.ensure_indexes()
    first = store.search_many("ana", [PRIVATE], searches(store, "what is my cat called"))  # LanceDB
    deadline = time.monotonic() + 30
    while "ana" not in store._hot and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "ana" in store._hot
    again = store.search_many("ana", [PRIVATE], searches(store, "what is my cat called"))
    assert set(ids(again)[0]) == set(ids(first)[0])


def test_compaction_keeps_the_cache_exact(pair) -> None:
    cached, plain = pair
    cached.search_many("ana", [PRIVATE], searches(cached, "cat"))
    cached.add_turns(turns_for("ana", 3, prefix="late"))
    cached.table("turns").optimize()  # rewrites fragments: versions the log does not know
    got = cached.search_many("ana", [PRIVATE], searches(cached, "cello"))
    want = plain.search_many("ana", [PRIVATE], searches(plain, "cello"))
    assert set(ids(got)[0]) == set(ids(want)[0])
    assert len(cached._hot.get("ana").parts["turns"].position) == 40 + 6 + 3


def test_recent_turns_match_lancedb_with_staged_ones(tmp_path: Path, embedder) -> None:
    store = Store(tmp_path / "db", embedder, journal=tmp_path / "journal.jsonl")
    try:
        older = turns_for("ana", 30)
        replies = [
            Turn("ana", "console", "ana", t.message_id, "assistant", f"noted: {t.text}", ts=t.ts)
            for t in older
        ]
        store.add_turns([*older, *replies, *turns_for("ana", 5, scope=chat_scope("tg", "grp"), prefix="g")])
        store.search_many("ana", [PRIVATE], searches(store, "cat"))  # held
        [staged] = turns_for("ana", 1, prefix="s")
        staged.ts = T0 + timedelta(days=400)
        store.record_turns([staged])
        held = store.recent_turns("ana", "console", "ana", limit=12)
        assert [t.id for t in held] == [
            t.id for t in store.turns_of("ana", platform="console", chat_id="ana", limit=12)
        ]
        assert held[-1].id == staged.id and [t.role for t in held[-3:-1]] == ["user", "assistant"]
    finally:
        store.close()
