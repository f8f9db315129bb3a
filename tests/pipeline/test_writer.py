"""Turns recorded off the reply path (core/memory/writer.py): durable at once, readable at once,
written to LanceDB with their reply, never lost by a crash, never stored twice."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core.assistant import Assistant
from core.config import Settings
from core.memory import filters as f
from core.memory import writer
from core.memory.records import Turn
from core.memory.store import Store, open_store
from tests.helpers import dm, say

ROOT = Path(__file__).resolve().parents[2]


def _stored(store: Store, person: str = "dana") -> int:
    """Rows LanceDB holds, read past the store's own view of staged turns."""
    return store.table("turns").count_rows(f.eq("person_id", person))


def _journal(settings: Settings) -> Path:
    return settings.data_dir / "journal" / "turns.jsonl"


def test_a_recorded_turn_is_readable_at_once_and_written_with_its_reply(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "LINGER_SECONDS", 60.0)  # committed when settled, not before
    store = open_store(settings, journal=True)
    try:
        user = Turn("dana", "console", "dana", "1", "user", "I am moving to Porto in May.")
        assert store.record_turns([user]) == 1
        assert _stored(store) == 0, "the message waits for its reply before LanceDB sees it"
        assert "Porto" in _journal(settings).read_text(encoding="utf-8"), "but it is durable already"
        assert [t.id for t in store.turns_of("dana", chat_id="dana")] == [user.id]
        assert store.record_turns([user]) == 0, "a staged turn is a duplicate too"

        version = store.table("turns").version
        written = threading.Event()
        reply = Turn("dana", "console", "dana", "1", "assistant", "Porto in May, noted.")
        store.record_turns([reply], check=False, then=written.set)
        assert not written.is_set() and _stored(store) == 0
        store.settle()
        assert written.is_set(), "the callback ran before settle returned"
        assert _stored(store) == 2
        assert store.table("turns").version == version + 1, "both turns in one commit"
        assert _journal(settings).stat().st_size == 0, "the journal keeps nothing LanceDB has"
        [stored_user, _] = store.turns_of("dana")
        assert stored_user.text == user.text and stored_user.ts == user.ts
    finally:
        store.close()


_CRASH = """
import os, sys
from core.memory.store import open_store
from core.config import Settings
from core.memory import writer
from core.memory.records import Turn

writer.LINGER_SECONDS = 3600.0
store = open_store(Settings(data_dir=sys.argv[1], _env_file=None), journal=True)
store.record_turns([Turn("dana", "console", "dana", "7", "user", "My locker code is 4471.")])
os._exit(3)  # a crash: no close, no flush, the writer thread dies with the process
"""


async def test_a_crash_loses_no_message_and_dedupe_still_holds(settings: Settings, engine) -> None:
    settings.ensure_data_dir()
    crashed = subprocess.run([sys.executable, "-c", _CRASH, str(settings.data_dir)], cwd=ROOT, timeout=300)
    assert crashed.returncode == 3
    assert "4471" in _journal(settings).read_text(encoding="utf-8")

    store = open_store(settings, journal=True)  # the next start writes what the journal holds
    try:
        assert _stored(store) == 1
        assert [t.text for t in store.turns_of("dana")] == ["My locker code is 4471."]
        assert _journal(settings).stat().st_size == 0
        # the platform delivers the message again after the restart: answered once, stored once
        assistant = Assistant(settings, store, engine)
        assert await say(assistant, dm("My locker code is 4471.", message_id="7")) is None
        store.settle()
        assert _stored(store) == 1
    finally:
        store.close()


async def test_consolidation_hears_of_a_turn_only_once_lancedb_holds_it(assistant: Assistant) -> None:
    seen_rows: list[int] = []

    class Jobs:
        def after_turn(self, person_id: str) -> None:
            seen_rows.append(_stored(assistant.store, person_id))

        def memory_changed(self, person_id: str) -> None: ...

        def forget_person(self, person_id: str) -> None: ...

    assistant = Assistant(assistant.settings, assistant.store, assistant.engine, jobs=Jobs())
    await say(assistant, dm("I started learning the cello."))
    assistant.store.settle()
    assert seen_rows == [2], "a worker told about the turn must be able to read it"


def test_forgetting_leaves_no_text_in_the_journal(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "LINGER_SECONDS", 60.0)
    store = open_store(settings, journal=True)
    try:
        secret = "quokka-zanzibar-9120"
        store.record_turns([Turn("dana", "console", "dana", "1", "user", f"the alarm code is {secret}")])
        assert secret in _journal(settings).read_text(encoding="utf-8")
        store.forget_person("dana")
        assert secret not in _journal(settings).read_text(encoding="utf-8")
        assert store.turns_of("dana") == [] and _stored(store) == 0
    finally:
        store.close()


def test_a_second_process_on_the_same_data_dir_records_synchronously(settings: Settings) -> None:
    first = open_store(settings, journal=True)
    try:
        second = open_store(settings, journal=True)  # cannot own the journal the first one holds
        assert second.record_turns([Turn("eve", "console", "eve", "1", "user", "hello")]) == 1
        assert _stored(second, "eve") == 1, "no journal: written before record_turns returns"
        second.close()
    finally:
        first.close()


async def test_a_message_from_another_chat_a_moment_ago_is_recalled(assistant: Assistant) -> None:
    await say(assistant, dm("My cat is called Mochi.", chat_id="phone"))
    await say(assistant, dm("What is my cat called?", chat_id="laptop"))
    assert "Mochi" in assistant.engine.last_prompt_text()


def test_a_store_that_keeps_failing_makes_settle_fail_with_what_to_do(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "RETRY_SECONDS", 0.01)
    store = open_store(settings, journal=True)
    real_commit = store._writer._commit

    def disk_full(turns: list[Turn]) -> None:
        raise OSError(28, "No space left on device")

    store._writer._commit = disk_full
    try:
        store.record_turns([Turn("dana", "console", "dana", "1", "user", "kept through a full disk")])
        with pytest.raises(writer.TurnsNotWritten, match="free disk space"):
            store.settle()
        assert "kept through a full disk" in _journal(settings).read_text(encoding="utf-8")
        store._writer._commit = real_commit  # space freed: the next settle writes the turn
        store.settle()
        assert _stored(store) == 1
    finally:
        store.close()


async def test_a_command_that_needs_the_store_answers_when_it_keeps_failing(
    assistant: Assistant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "RETRY_SECONDS", 0.01)
    await say(assistant, dm("I keep bees on my roof"))

    def disk_full(turns: list[Turn]) -> None:
        raise OSError(28, "No space left on device")

    assistant.store._writer._commit = disk_full
    await say(assistant, dm("and two cats"))
    answer = await say(assistant, dm("/forget bees"))
    assert "free disk space" in answer
