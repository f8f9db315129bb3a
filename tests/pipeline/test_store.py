"""The LanceDB store on real files: dedupe, scopes, hostile ids, and deletion that reaches the disk."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from core.memory import filters
from core.memory.records import PRIVATE, Memory, Person, Turn, chat_scope
from core.memory.store import Store

HOSTILE_IDS = [
    "x' OR '1'='1",
    "' OR 1=1 --",
    "dana'; DROP TABLE turns; --",
    'quote"double',
    "new\nline",
    "back\\slash",
    "ünïcødé 🎉",
    "%_wild*",
    "(paren) AND true",
]


def _turn(person: str, text: str, msg: str, visibility: str = PRIVATE, chat: str | None = None) -> Turn:
    return Turn(person, "console", chat or person, msg, "user", text, visibility=visibility)


def test_same_message_stored_once(store: Store) -> None:
    first = store.add_turns([_turn("dana", "hello", "1")])
    again = store.add_turns([_turn("dana", "hello again", "1")])
    assert (first, again) == (1, 0)
    assert [t.text for t in store.turns_of("dana")] == ["hello"]


@pytest.mark.parametrize("hostile", HOSTILE_IDS)
def test_hostile_ids_neither_break_nor_widen_queries(store: Store, hostile: str) -> None:
    store.add_turns([_turn("dana", "dana's secret plan", "1"), _turn("eve", "eve's note", "2")])
    store.add_turns([_turn(hostile, "hostile text", "3", chat=hostile)])
    store.save_memories([Memory("dana", "fact", "Dana likes tea", "m1")])
    [vector] = store.embed(["secret plan"])

    hits = store.search("turns", hostile, vector, visibilities=[PRIVATE, hostile], k=10)
    assert [h.item.text for h in hits] == ["hostile text"]
    assert store.search("memories", hostile, vector, visibilities=[PRIVATE], k=10) == []
    assert [t.text for t in store.turns_of(hostile, chat_id=hostile)] == ["hostile text"]
    assert store.has_turn("console", hostile, "3")
    assert not store.has_turn("console", hostile, hostile)
    assert store.memories_of(hostile) == []
    store.save_person(Person(hostile, hostile))
    store.link_identity("telegram", hostile, hostile)
    assert store.person_for("telegram", hostile) == hostile
    assert [i.person_id for i in store.identities_of(hostile)] == [hostile]
    store.forget_person(hostile)
    assert {t.person_id for t in store.turns_of("dana")} == {"dana"}
    assert store.counts()["turns"] == 2


def test_quote_refuses_what_it_cannot_represent() -> None:
    with pytest.raises(filters.FilterValueError):
        filters.quote("nul\x00byte")
    with pytest.raises(filters.FilterValueError):
        filters.eq("person_id; DROP", "x")
    assert filters.quote("it's") == "'it''s'"
    assert filters.is_in("id", []) == "false"


def test_search_stays_inside_scopes(store: Store) -> None:
    group = chat_scope("telegram", "g1")
    store.add_turns(
        [
            _turn("dana", "my salary is 5000", "1"),
            Turn("dana", "telegram", "g1", "2", "user", "the team meets on friday", visibility=group),
        ]
    )
    [vector] = store.embed(["salary"])
    in_group = store.search("turns", "dana", vector, visibilities=[group], k=10)
    assert [h.item.text for h in in_group] == ["the team meets on friday"]


def test_superseded_memories_are_history_not_current(store: Store) -> None:
    from datetime import UTC, datetime

    old = Memory("dana", "fact", "Lives in Berlin", "m1")
    store.save_memories([old])
    old.valid_to = datetime.now(UTC)
    store.save_memories([old, Memory("dana", "fact", "Lives in Lisbon", "m2")])
    [vector] = store.embed(["where do I live"])
    current = [h.item.text for h in store.search("memories", "dana", vector, visibilities=[PRIVATE], k=5)]
    assert current == ["Lives in Lisbon"]
    assert {m.text for m in store.memories_of("dana", current_only=False)} == {
        "Lives in Berlin",
        "Lives in Lisbon",
    }


def _files_containing(root: Path, needle: str) -> list[str]:
    found = subprocess.run(["grep", "-rlaF", needle, str(root)], capture_output=True, text=True)
    return found.stdout.split()


def test_forget_person_removes_text_from_every_file(store: Store) -> None:
    secret = "zanzibar-quokka-7731"
    store.add_turns([_turn("dana", f"my code word is {secret}", str(i)) for i in range(5)])
    store.add_turns([_turn("eve", "eve stays", "e1")])
    store.save_memories([Memory("dana", "fact", f"Code word {secret}", "m1")])
    store.ensure_indexes()
    root = Path(store.uri)
    assert _files_containing(root, secret), "precondition: the text is on disk"
    store.forget_person("dana")
    assert _files_containing(root, secret) == []
    assert [t.text for t in store.turns_of("eve")] == ["eve stays"]


def _dated(person: str, n: int, visibility: str = PRIVATE) -> list[Turn]:
    from datetime import UTC, datetime, timedelta

    rng = __import__("random").Random(n)
    turns = []
    for i in range(n):
        t = Turn(
            person,
            "console",
            person,
            f"{person}-{i}",
            "user",
            f"note {i} about the garden",
            visibility=visibility,
        )
        t.ts = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=i)
        t.vector = [rng.uniform(-1, 1) for _ in range(384)]
        turns.append(t)
    return turns


def test_span_lists_cut_from_one_ranking_equal_their_own_queries(store: Store) -> None:
    """A small person's time-span list is cut from the ranking of all their rows; it must be the
    very list a query restricted to the span returns, for vectors and for full text, and a
    span list never holds rows from outside the span or from another person."""
    from datetime import UTC, datetime

    from core.memory.store import Search

    store.add_turns(_dated("ana", 120) + _dated("ben", 60))
    store.ensure_indexes()
    since, until = datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)
    query = [0.5] * 384
    for kind in ({"vector": query}, {"text": "garden note"}):
        span = Search("turns", 10, since=since, until=until, **kind)
        together = store.search_many("ana", [PRIVATE], [Search("turns", 10, **kind), span])[1]
        alone = store.search_many("ana", [PRIVATE], [span])[0]
        # the same scores in the same order (rows that tie may come in either order)
        assert [round(h.distance, 6) for h in together] == [round(h.distance, 6) for h in alone]
        last = alone[-1].distance - 1e-6
        assert {h.item.id for h in together if h.distance < last} == {
            h.item.id for h in alone if h.distance < last
        }
        assert len(alone) == 10
        assert all(h.item.person_id == "ana" and since <= h.item.ts < until for h in alone)


def test_filters_are_answered_from_scalar_indexes(store: Store) -> None:
    """Every column a recall filter names is indexed, with the configured index type (an older
    store's BTREE on person_id is replaced by a BITMAP)."""
    from core.memory.store import SCALAR_INDEXES

    store.add_turns(_dated("ana", 5))
    store.save_memories([Memory("ana", "fact", "Grows tomatoes", "m1")])
    store.table("turns").create_scalar_index("person_id", index_type="BTREE", replace=True)
    store.ensure_indexes()
    for name in ("turns", "memories"):
        found = {tuple(i.columns): i.index_type for i in store.table(name).list_indices()}
        for column, config in SCALAR_INDEXES[name].items():
            assert found.get((column,)) == config.__name__, (name, column, found)
