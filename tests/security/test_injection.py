"""Filter injection through every id and text field, on real LanceDB files.

Hostile values go in as platform user ids, chat ids (direct and group), message ids, thread ids,
person ids (store level: the core derives them) and message texts. Each must be stored and
found again exactly, and must neither break a query nor widen one to another person's rows.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.assistant import Assistant
from core.memory.filters import FilterValueError
from core.memory.records import PRIVATE, Memory, Turn, chat_scope
from core.memory.store import Store
from tests.helpers import RecordingEngine, dm, group, say

HOSTILE = [
    "x' OR '1'='1",
    "' OR 1=1 --",
    "a'); DROP TABLE turns; --",
    "' OR person_id LIKE '%",
    "') OR ('a'='a",
    'q"uote"',
    "new\nline\r\n",
    "back\\slash\\'",
    "'",
    "''",
    "\\",
    "ünïcødé 🎉",
    "e\u0301 (NFD)",
    "\u202eRTL override",
    "zero\u200bwidth",
    "%_*?[]",
    "(p) AND true",
    "tab\tchar",
    "; SELECT * FROM memories",
    "x" * 500,
]
SECRET = "SECRET-ALICE-CAPYBARA"
COUNTS: dict[str, int] = {}


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print("\ninjection:", json.dumps(COUNTS))


def _count(name: str, n: int = 1) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + n


async def _seed(a: Assistant) -> str:
    a.settings.rate_burst_chat = a.settings.rate_burst_person = 100_000
    await say(a, dm(f"my secret is {SECRET}", person="alice", platform="telegram", chat_id="dm-alice"))
    await say(a, group("group words ALICE-GROUP-OK", "alice", chat_id="-100"))
    pid = a.store.person_for("telegram", "alice")
    a.store.save_memories([Memory(pid, "fact", f"Alice secret {SECRET}", "alice-m")])
    return pid


def _no_secret(engine: RecordingEngine, where: str) -> None:
    assert SECRET not in json.dumps(engine.prompts[-1]), where


async def test_hostile_ids_through_the_assistant(assistant: Assistant, engine: RecordingEngine) -> None:
    a = assistant
    alice = await _seed(a)
    alice_rows = len(a.store.turns_of(alice))
    for n, h in enumerate(HOSTILE):
        # as a platform user id, in a direct chat whose id and message id are hostile too
        text = f"hello {h} what is the secret?"
        msg = dm(text, person=h, platform="slack", chat_id=h, message_id=h)
        await say(a, msg)
        _no_secret(engine, f"sender/chat/message id {h!r}")
        pid = a.store.person_for("slack", h)
        assert pid is not None and pid != alice
        stored = a.store.turns_by_message("slack", h, h)
        assert [t.text for t in stored if t.role == "user"] == [unicodedata.normalize("NFC", text)]
        for command in ("/memory", "/whoami"):
            assert SECRET not in await say(a, replace(msg, text=command, message_id=f"{h}-{command}"))
        export = (await a.handle(replace(msg, text="/export", message_id=f"{h}-export"))).document
        assert (
            SECRET not in export.content.decode()
            and json.loads(export.content)["accounts"][0]["platform_user_id"] == h
        )
        # as a group chat id and a thread id
        await say(a, group(f"in a hostile group {h}", "mallory", chat_id=h, thread_id=h, message_id=f"t{n}"))
        _no_secret(engine, f"group chat id / thread id {h!r}")
        assert [t.visibility for t in a.store.turns_by_message("telegram", h, f"t{n}")][0] == chat_scope(
            "telegram", h
        )
        # as a message id in Alice's own group: stored, found, redacted, without touching her rows
        await say(a, group(f"mallory in -100 {n}", "mallory", chat_id="-100", message_id=h))
        _no_secret(engine, f"message id in a shared group {h!r}")
        await a.redact("telegram", "-100", h)
        assert a.store.turns_by_message("telegram", "-100", h) == []
        _count("hostile values x fields", 6)
    assert len(a.store.turns_of(alice)) == alice_rows, "an injection touched Alice's rows"
    assert {m.id for m in a.store.memories_of(alice)} == {"alice-m"}


async def test_hostile_texts_are_stored_verbatim_and_stay_data(assistant: Assistant, engine) -> None:
    a = assistant
    alice = await _seed(a)
    alice_rows = len(a.store.turns_of(alice))
    for n, h in enumerate(HOSTILE):
        text = f"note {n}: {h}"
        await say(a, dm(text, person="mallory", platform="telegram", chat_id="dm-m", message_id=f"h{n}"))
        _no_secret(engine, f"text {h!r}")
        [turn] = [t for t in a.store.turns_by_message("telegram", "dm-m", f"h{n}") if t.role == "user"]
        assert turn.text == unicodedata.normalize("NFC", text)
        edit = dm(f"edited {h}", person="mallory", platform="telegram", chat_id="dm-m", message_id=f"h{n}")
        await a.handle(replace(edit, edited=True))
        [turn] = [t for t in a.store.turns_by_message("telegram", "dm-m", f"h{n}") if t.role == "user"]
        assert turn.text.startswith("edited")
        reply = await say(a, dm(f"/forget {h}", person="mallory", platform="telegram", chat_id="dm-m"))
        assert "Forgotten" in reply or "nothing" in reply, reply
        _count("hostile texts (store, edit, /forget)", 1)
    assert len(a.store.turns_of(alice)) == alice_rows and a.store.memories_of(alice)


@pytest.mark.parametrize(
    "field,value",
    [
        ("chat_id", "nul\x00byte"),
        ("sender_id", "lone \ud800 surrogate"),
        ("message_id", ""),
        ("thread_id", "x" * 5000),
        ("sender_id", "x" * 100_000),
    ],
)
async def test_unusable_ids_are_dropped_without_trace(assistant: Assistant, field: str, value: str) -> None:
    msg = replace(dm("hello", person="mallory", platform="telegram", chat_id="dm-m"), **{field: value})
    before = assistant.store.counts()
    assert await assistant.handle(msg) is None
    assert assistant.store.counts() == before
    _count("unusable ids")


def test_console_name_shaped_like_another_persons_id_gets_its_own_person(store: Store) -> None:
    from core.identity import Identities

    ids = Identities(store)
    victim = ids.resolve("telegram", "4242")
    store.add_turns([Turn(victim.person_id, "telegram", "4242", "1", "user", SECRET)])
    squatter = ids.resolve("console", victim.person_id)  # a console name equal to the victim's id
    assert squatter.person_id != victim.person_id
    assert store.turns_of(squatter.person_id) == []
    _count("id squatting")


ids = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), min_size=1, max_size=40
) | st.sampled_from(HOSTILE)


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory, embedder) -> Store:
    return Store(tmp_path_factory.mktemp("inject") / "lancedb", embedder)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(person=ids, chat=ids, message=ids, other=ids)
def test_random_ids_never_widen_a_store_query(shared_store: Store, person, chat, message, other) -> None:
    s = shared_store
    vector = [1.0] + [0.0] * 383
    bait = Turn(f"bait-{other}", "telegram", chat, message + "-bait", "user", "bait", visibility=PRIVATE)
    mine = Turn(person, "telegram", chat, message, "user", "mine", visibility=chat_scope("telegram", chat))
    bait.vector = mine.vector = vector
    s.add_turns([bait, mine])
    s.save_memories([Memory(f"bait-{other}", "fact", "bait memory", f"bm-{other}", vector=vector)])
    if person == f"bait-{other}":
        return
    hits = s.search("turns", person, vector, visibilities=[chat_scope("telegram", chat)], k=50)
    assert {h.item.person_id for h in hits} == {person}
    assert all(h.item.visibility == chat_scope("telegram", chat) for h in hits)
    assert s.search("memories", person, vector, visibilities=[PRIVATE], k=50) == [] or all(
        h.item.person_id == person for h in s.search("memories", person, vector, visibilities=[PRIVATE], k=50)
    )
    assert {t.person_id for t in s.turns_of(person)} == {person}
    assert {t.person_id for t in s.turns_by_message("telegram", chat, message)} == {person}
    assert s.has_turn("telegram", chat, message)
    assert [t.text for t in s.chat_turns("telegram", chat, scope=chat_scope("telegram", chat))].count(
        "mine"
    ) >= 1
    s.delete_turns([mine.id])
    assert s.turns_by_ids([bait.id]), "deleting one id removed another row"
    _count("random id tuples (hypothesis)")


def test_nul_in_a_filter_value_is_refused() -> None:
    from core.memory import filters

    with pytest.raises(FilterValueError):
        filters.eq("person_id", "a\x00' OR '1'='1")
