"""Property: consolidation never carries words across people or scopes.

Random people say random facts (home, employer, name, allergy, questions) in direct chats and
in groups; each value is a unique marker word. After the real Consolidator runs, every memory's
words and evidence come from that person's turns of that memory's own scope, and the profile
(shown in direct chats and shared groups) holds only words said privately.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.memory.consolidate import Consolidator
from core.memory.embed import DIM
from core.memory.records import PRIVATE, Turn, chat_scope
from core.memory.store import Store

TEMPLATES = [
    "I live in {w}",
    "I work at {w}",
    "my name is {w}",
    "I'm allergic to {w}",
    "I grew up in {w}",
    "I no longer live in {w}",
    "how do I fix {w}?",
    "how do I fix {w} again?",
]
MARKER = re.compile(r"Mk\d+x\d+")
_run = itertools.count()
CHECKED = {"memories": 0, "worlds": 0}


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\nconsolidation property: {CHECKED['worlds']} worlds, {CHECKED['memories']} memories checked")


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory, embedder) -> Store:
    return Store(tmp_path_factory.mktemp("consolidate") / "lancedb", embedder)


said = st.lists(
    st.tuples(st.integers(0, 2), st.integers(-1, 1), st.integers(0, len(TEMPLATES) - 1)),
    min_size=3,
    max_size=14,
)


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(said=said, seed=st.integers(0, 2**31 - 1))
def test_memories_and_profile_stay_in_their_scope(shared_store: Store, said, seed: int) -> None:
    n = next(_run)
    rng = np.random.default_rng(seed)
    people = [f"c{n}-p{i}" for i in range(3)]
    groups = [f"c{n}-g{i}" for i in range(2)]
    turns: list[Turn] = []
    for k, (who, where, template) in enumerate(said):
        person = people[who]
        scope = PRIVATE if where < 0 else chat_scope("telegram", groups[where])
        chat = f"dm-{person}" if where < 0 else groups[where]
        text = TEMPLATES[template].format(w=f"Mk{n}x{k}")
        t = Turn(person, "telegram", chat, f"c{n}-{k}", "user", text, visibility=scope)
        v = rng.normal(size=DIM).astype(np.float32)
        t.vector = (v / np.linalg.norm(v)).tolist()
        turns.append(t)
    shared_store.add_turns(turns)
    consolidator = Consolidator(shared_store)
    for person in people:
        from core.memory.records import Person

        if shared_store.person(person) is None:
            shared_store.save_person(Person(person))
        consolidator.run(person)
    by_id = {t.id: t for t in turns}
    for person in people:
        mine = [t for t in turns if t.person_id == person]
        for m in shared_store.memories_of(person, current_only=False):
            same_scope = [t for t in mine if t.visibility == m.visibility]
            allowed_words = {w for t in same_scope for w in MARKER.findall(t.text)}
            assert set(MARKER.findall(m.text)) <= allowed_words, (
                f"{m.text!r} ({m.visibility}) crossed a scope"
            )
            for source in m.source_turn_ids:
                assert source in by_id, "evidence from another world"
                assert by_id[source].person_id == person and by_id[source].visibility == m.visibility
            CHECKED["memories"] += 1
        profile = shared_store.person(person).profile
        private_words = {w for t in mine if t.visibility == PRIVATE for w in MARKER.findall(t.text)}
        assert set(MARKER.findall(profile)) <= private_words, f"profile {profile!r} holds group words"
    CHECKED["worlds"] += 1
