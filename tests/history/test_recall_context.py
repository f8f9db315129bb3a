"""What recall adds for real conversations: session neighbours, speakers, dates resolved at import."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.memory.importers import import_history
from core.memory.recall import ChatContext, Recall
from core.memory.records import Person, Turn, chat_scope
from core.memory.store import Store
from core.memory.when import resolve_relative

T0 = datetime(2024, 1, 10, 19, 0, tzinfo=UTC)  # a Wednesday
DM = ChatContext("console", "x", "direct")


def ask(store: Store, person: str, question: str, k: int = 5):
    recall = Recall(store, lambda s: len(s) // 4 + 1)
    [vector] = store.embed([question])
    p = store.person(person) or Person(person_id=person)
    return recall.recall(
        p, DM, vector, k=k, budget_tokens=100_000, query_text=question, now=T0 + timedelta(days=30)
    )


def write_jsonl(path: Path, rows: list[tuple[str, str, str, datetime, str]]) -> Path:
    path.write_text(
        "".join(
            json.dumps({"id": i, "speaker": who, "text": text, "ts": ts.isoformat(), "chat": chat}) + "\n"
            for i, who, text, ts, chat in rows
        )
    )
    return path


@pytest.fixture
def chat(tmp_path: Path, store: Store) -> Store:
    m = timedelta(minutes=1)
    rows = [
        ("c1", "Lea", "How old is your daughter now?", T0, "dm-lea"),
        ("c2", "Dana", "Seven in March", T0 + m, "dm-lea"),
        ("c3", "Lea", "Time flies", T0 + 2 * m, "dm-lea"),
        ("c4", "Dana", "Off to bed", T0 + 3 * m, "dm-lea"),
        ("c5", "Dana", "Morning! The bakery has new croissants", T0 + timedelta(hours=9), "dm-lea"),
        ("o1", "Dana", "Unrelated chat, a minute later", T0 + m, "other"),
        ("k1", "Dana", "My name is Dana by the way", T0 - timedelta(days=3), "dm-lea"),
        ("k2", "Dana", "I play volleyball every Sunday", T0 - timedelta(days=2), "dm-lea"),
        ("k3", "Lea", "I only play tennis", T0 - timedelta(days=2) + m, "dm-lea"),
        ("d1", "Dana", "We made macarons for mum last Friday", T0 - timedelta(days=1), "dm-lea"),
    ]
    store.save_person(Person(person_id="dana"))
    import_history(store, write_jsonl(tmp_path / "h.jsonl", rows), "dana", me="Dana", fmt="jsonl")
    return store


def test_a_recalled_turn_brings_its_session_neighbours(chat: Store) -> None:
    [item] = [i for i in ask(chat, "dana", "How old is the daughter?") if i.source_ids[0] == "c1"]
    # the answer is the next turn: its id is cited after the item's own, its text in `context`
    assert item.source_ids == ["c1", "c2"]  # nothing before c1 in this session
    assert item.context == ["Seven in March"]  # Dana is the person: her turns carry no name
    [c1] = [t for t in chat.turns_of("dana") if t.source_id == "c1"]
    neighbours = chat.neighbours("dana", ["private"], [c1], before=2, after=5, roles=("user", "contact"))
    # not another chat's turn a minute later, nor the next morning's (another session)
    assert [t.source_id for t in neighbours[c1.id]] == ["c2", "c3", "c4"]


def test_neighbours_are_the_same_without_the_search_cache(chat: Store, tmp_path: Path, embedder) -> None:
    cold = Store(chat.uri, embedder, search_cache_bytes=0)
    [turn] = cold.turns_by_ids([t.id for t in chat.turns_of("dana") if t.source_id == "c3"])
    around = cold.neighbours("dana", ["private"], [turn], before=1, after=1, roles=("user", "contact"))
    assert [t.source_id for t in around[turn.id]] == ["c2", "c4"]


def test_turns_by_id_with_their_vectors_from_either_path(chat: Store, embedder) -> None:
    """A memory's source turns join recall's candidates with their stored vectors, the same from
    the search cache as from LanceDB."""
    cold = Store(chat.uri, embedder, search_cache_bytes=0)
    [c3] = [t for t in chat.turns_of("dana") if t.source_id == "c3"]
    [expected] = embedder.embed([c3.text])
    for store in (chat, cold):
        [turn] = store.turns_by_ids([c3.id], with_vectors=True)
        assert turn.vector is not None
        assert abs(float(sum(a * b for a, b in zip(turn.vector, expected, strict=True))) - 1.0) < 0.02
    assert chat.turns_by_ids([c3.id])[0].vector is None


def test_a_speaker_named_in_the_question_is_who_said_it(chat: Store) -> None:
    person = chat.person("dana")
    assert person is not None and person.settings.names == ["Dana"] and person.settings.contacts == ["Lea"]
    top = ask(chat, "dana", "What sport does Dana play?")[0]
    assert top.source_ids[0] == "k2"  # not "My name is Dana", which only shares the name
    top = ask(chat, "dana", "What sport does Lea play?")[0]
    assert top.source_ids[0] == "k3"


def test_relative_dates_are_resolved_at_import(chat: Store) -> None:
    [turn] = [t for t in chat.turns_of("dana") if t.source_id == "d1"]
    assert turn.text == "We made macarons for mum last Friday [last Friday: Friday 5 January 2024]"


def test_relative_phrases_against_the_moment_said() -> None:
    said = datetime(2024, 1, 10, 15, tzinfo=UTC)  # a Wednesday
    assert resolve_relative("Went hiking yesterday, again next week", said) == [
        ("yesterday", "Tuesday 9 January 2024"),
        ("next week", "the week of 15 January 2024"),
    ]
    assert resolve_relative("Last Saturday was fun! See you tomorrow", said) == [
        ("Last Saturday", "Saturday 6 January 2024"),
        ("tomorrow", "Thursday 11 January 2024"),
    ]
    assert resolve_relative("Dinner next Friday?", said) == [("next Friday", "Friday 12 January 2024")]
    assert resolve_relative("Climbing on Saturday?", said) == []  # past or coming: not guessed
    assert resolve_relative("In May 2023 I was in Rome", said) == []  # a date already says when


def test_recall_json_keeps_its_format(chat: Store) -> None:
    from app.cli import _recall_items

    items = _recall_items(Recall(chat, lambda s: 1), chat, "dana", "how old is the daughter", 3)
    assert items and all(
        set(i) >= {"text", "kind", "score", "ts", "source_ids", "role", "context"} for i in items
    )
    assert all(isinstance(s, str) for i in items for s in i["source_ids"])


def test_a_neighbour_outside_the_chat_s_scopes_never_comes_along(chat: Store) -> None:
    [c1] = [t for t in chat.turns_of("dana") if t.source_id == "c1"]
    group_only = Turn(
        person_id="dana",
        platform=c1.platform,
        chat_id=c1.chat_id,
        message_id="g1",
        role="contact",
        text="Lea: a secret said where only the group may recall it",
        ts=c1.ts - timedelta(seconds=30),
        visibility=chat_scope("telegram", "camp"),
    )
    chat.add_turns([group_only])
    private = chat.neighbours("dana", ["private"], [c1], before=1, after=0, roles=("user", "contact"))
    assert private[c1.id] == []
    group = chat.neighbours("dana", [chat_scope("telegram", "camp")], [group_only], before=0, after=1)
    assert group[group_only.id] == []  # nor does the private turn after it reach the group
