"""What a person may do with their own data: one set of rules for the chat commands
(core/commands.py) and the web page (bots/web/), so both forget, erase, pause and edit alike.

Everything here is about one person, named by the caller; none of it checks who asks. The chat
resolves the sender's account, the web page its session's account, before calling in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from core.memory.records import PRIVATE, Memory, Person, Turn
from core.messages import utcnow
from core.text import clean

if TYPE_CHECKING:
    from core.assistant import Assistant
    from core.forgetting import Forgetting
    from core.memory.store import Store

log = structlog.get_logger(__name__)

MAX_MEMORY_CHARS = 500


class EditError(ValueError):
    """An edit that cannot be made; the message is safe to show the person."""


# -- forgetting -------------------------------------------------------------------------------


def forget(
    store: Store, forgetting: Forgetting, person_id: str, turns: Sequence[Turn], memory_ids: Iterable[str]
) -> None:
    """Delete these turns (with the other turns of the same platform messages: a reply goes
    with its question) and memories, and everything derived from them (core/forgetting.py)."""
    doomed = list(turns)
    for t in list(doomed):
        doomed += [r for r in store.turns_by_message(t.platform, t.chat_id, t.message_id) if r.id != t.id]
    store.delete_turns([t.id for t in doomed])
    forgetting.forget([t.id for t in doomed], list(memory_ids), {person_id})


def set_paused(store: Store, person: Person, paused: bool) -> None:
    """Stop (or start again) remembering new messages; answers go on either way."""
    person.settings.paused = paused
    store.save_person(person)


# -- reading ----------------------------------------------------------------------------------


def scopes_of(memories: Iterable[Memory], turns: Iterable[Turn]) -> list[str]:
    """Every scope the person's data lives in: private first, then each group's."""
    groups = {m.visibility for m in memories} | {t.visibility for t in turns}
    groups.discard(PRIVATE)
    return [PRIVATE, *sorted(groups)]


def superseded_by(memory: Memory, older: Iterable[Memory]) -> list[Memory]:
    """What `memory` replaced, newest first: ended memories of the same kind and scope that
    held the same slot (a move replaces the old city) or came from the same messages (an edit
    keeps the sources of what it corrects)."""
    from core.memory.consolidate import slot_of

    slot = slot_of(memory)[0]
    sources = set(memory.source_turn_ids)
    found = [
        m
        for m in older
        if not m.current
        and m.id != memory.id
        and m.kind == memory.kind
        and m.visibility == memory.visibility
        and ((slot and slot_of(m)[0] == slot) or (sources and sources & set(m.source_turn_ids)))
    ]
    return sorted(found, key=lambda m: m.valid_to or m.valid_from, reverse=True)


# -- correcting -------------------------------------------------------------------------------


def edit_memory(store: Store, forgetting: Forgetting, person_id: str, memory_id: str, text: str) -> Memory:
    """Correct a memory: the corrected text becomes a new current memory (same kind, scope and
    sources) and the old one ends now and stays in history, as a contradiction does in
    consolidation. Only the person's own current memories can be edited."""
    text = clean(text).strip()
    if not text:
        raise EditError("The new text is empty: write what I should remember instead, or forget it.")
    if len(text) > MAX_MEMORY_CHARS:
        raise EditError(f"That is {len(text):,} characters; a memory holds up to {MAX_MEMORY_CHARS}.")
    old = next((m for m in store.memories_of(person_id) if m.id == memory_id), None)
    if old is None:
        raise EditError("That memory is not one of your current memories (it may have changed meanwhile).")
    if text == old.text:
        return old
    now = utcnow()
    new = Memory(
        person_id=person_id,
        kind=old.kind,
        text=text,
        id=_edit_id(old.id, now),
        source_turn_ids=list(old.source_turn_ids),
        confidence=1.0,  # the person said so
        visibility=old.visibility,
        created_at=now,
        updated_at=now,
        valid_from=now,
    )
    ended = replace(old, valid_to=now, updated_at=now)
    store.save_memories([ended, new])
    forgetting.refresh_profile(person_id)  # the profile shows the correction at once
    forgetting.jobs.memory_changed(person_id)
    log.info("memory edited", person=person_id, kind=old.kind)
    return new


def _edit_id(old_id: str, at: datetime) -> str:
    return hashlib.sha256(f"{old_id}\x1fedit\x1f{at.isoformat()}".encode()).hexdigest()[:32]


@dataclass
class Found:
    """One search hit as the page shows it: a memory or a message, with its score."""

    score: float
    memory: Memory | None = None
    turn: Turn | None = None
    context: list[str] = field(default_factory=list)


def search(
    assistant: Assistant, person: Person, query: str, scopes: list[str], *, k: int = 20
) -> list[Found]:
    """The person's memories and messages that answer `query`, best first: the same hybrid
    recall (vectors, full text, time phrases) a reply uses, over the given scopes."""
    from core.memory.recall import ChatContext

    store = assistant.store
    query = clean(query).strip()
    if not query or not scopes:
        return []
    store.settle_turns_of(person.person_id)
    [vector] = store.embed([query])
    chat = ChatContext("web", person.person_id, "direct")
    hits = assistant.recall.recall(
        person, chat, vector, k=k, budget_tokens=100_000, scopes=scopes, query_text=query
    )
    memories = {m.id: m for m in store.memories_of(person.person_id, visibilities=scopes)}
    turn_ids = [h.id for h in hits if h.id not in memories]
    turns = {t.id: t for t in store.turns_by_ids(turn_ids) if t.person_id == person.person_id}
    found = []
    for h in hits:
        if h.id in memories:
            found.append(Found(h.score, memory=memories[h.id]))
        elif h.id in turns:
            found.append(Found(h.score, turn=turns[h.id], context=list(h.context)))
    return found
