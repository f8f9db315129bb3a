"""Forgetting: when something is erased, everything derived from it goes too.

A deleted message takes with it the memories consolidated from it, the profile sentences those
memories fed, the old LanceDB table versions that still hold the text, the chat process's caches
(recent turns, the engine's prompt prefixes), and, through the workers, what was trained on it.
One module owns that chain so /forget, /forget_me, a deleted or edited message and a merge of
two accounts all erase the same way.
"""

from __future__ import annotations

from typing import Protocol

import structlog

from core.jobs import Jobs
from core.memory.records import PRIVATE
from core.memory.store import Store
from core.reminders.service import Reminders

log = structlog.get_logger(__name__)


class ChatCaches(Protocol):
    """What the chat process keeps in memory about recent conversations (core/assistant.py)."""

    def drop_caches(self, person_id: str | None = None) -> None:
        """Forget cached turns of this person (everyone's when None) and the prompt prefixes."""

    def drop_turns(self, turn_ids: set[str]) -> None:
        """Forget these cached turns and the prompt prefixes that may hold their text."""


class Forgetting:
    def __init__(self, store: Store, jobs: Jobs, caches: ChatCaches, reminders: Reminders) -> None:
        self.store = store
        self.reminders = reminders  # not memories, but the person's too
        self.jobs = jobs
        self.caches = caches

    def forget(
        self, turn_ids: list[str], memory_ids: list[str] = (), person_ids: set[str] = frozenset()
    ) -> None:
        """Drop these memories and those built from these (already deleted) turns, purge old
        table versions so the text leaves the disk, clear caches, and tell the workers."""
        derived = self.store.memories_from_turns(turn_ids)
        # a follow-up proposed from a forgotten turn, or from a turn a forgotten memory came from
        chosen = {m.id: m for m in self.store.memories_of_ids(memory_ids)} if memory_ids else {}
        sources = set(turn_ids) | {t for m in chosen.values() for t in m.source_turn_ids}
        if sources and self.reminders.store.cancel_followups_from(sorted(sources)):
            self.reminders.dispatcher.wake()
        self.store.delete_memories([*memory_ids, *(m.id for m in derived)])
        touched = set(person_ids) | {m.person_id for m in derived}
        for person_id in touched:
            self.refresh_profile(person_id)  # before the purge, so the old profile goes too
        self.store.purge_history()
        self.caches.drop_turns(set(turn_ids))
        for person_id in touched:
            self.jobs.memory_changed(person_id)

    def forget_message(self, platform: str, chat_id: str, message_id: str) -> None:
        """A message was deleted on its platform: its turns (the reply too) and what they fed."""
        turns = self.store.turns_by_message(platform, chat_id, message_id)
        self.store.delete_turns([t.id for t in turns])
        self.forget([t.id for t in turns], person_ids={t.person_id for t in turns})

    def forget_person(self, person_id: str) -> None:
        """/forget_me: every row of the person, the caches, and what the workers derived."""
        self.store.forget_person(person_id)
        self.reminders.forget_person(person_id)
        self.caches.drop_caches(person_id)
        self.jobs.forget_person(person_id)
        log.info("person erased", person=person_id)

    def accounts_changed(self, kept: str | None = None, merged: str | None = None) -> None:
        """Accounts were linked or unlinked: cached turns may now belong to someone else. After a
        merge, what was derived from the merged person's rows (now `kept`'s) is rebuilt."""
        self.caches.drop_caches()
        if merged is not None and kept is not None and merged != kept:
            self.reminders.store.reassign(merged, kept)
            self.jobs.forget_person(merged)
            self.jobs.memory_changed(kept)

    def refresh_profile(self, person_id: str) -> None:
        """A forgotten memory must leave the profile now, not when a worker gets to it."""
        from core.memory.consolidate import profile_text

        person = self.store.person(person_id)
        if person is None or not person.profile:
            return
        profile = profile_text(self.store.memories_of(person_id, visibilities=[PRIVATE]))
        if profile != person.profile:
            person.profile = profile
            self.store.save_person(person)
