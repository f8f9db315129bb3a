"""The rows Confidante keeps: people, their accounts, what was said, and what was learned."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from core.messages import utcnow

Role = Literal["user", "assistant"]
MemoryKind = Literal["fact", "preference", "project", "question", "summary"]

PRIVATE = "private"


def chat_scope(platform: str, chat_id: str) -> str:
    """The visibility of what was said in a group: only that group may see it again."""
    return f"chat:{platform}:{chat_id}"


def turn_id(platform: str, chat_id: str, message_id: str, role: Role) -> str:
    """Stable id, so the same platform message stored twice is one row (merge_insert on it)."""
    raw = "\x1f".join((platform, chat_id, message_id, role))
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass
class PersonSettings:
    paused: bool = False
    shared_chats: list[str] = field(default_factory=list)
    style: str = ""
    # the names this person goes by in their imported chats (`--me`): "what did Kevin say" is
    # about their own turns, which carry no name
    names: list[str] = field(default_factory=list)
    contacts: list[str] = field(default_factory=list)  # the others' names there (their turns: "Name: text")
    # consolidation's progress (core/memory/consolidate.py): which turns were already read
    memory_state: dict = field(default_factory=dict)
    timezone: str = ""  # IANA name (/timezone, or the platform's profile): reminders' wall clock
    followups: bool = False  # /followups on: check-ins on dated things they mention (opt-in)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | None) -> PersonSettings:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class Person:
    person_id: str
    display_name: str = ""
    settings: PersonSettings = field(default_factory=PersonSettings)
    adapter_version: str = ""
    profile: str = ""
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class Identity:
    platform: str
    platform_user_id: str
    person_id: str
    linked_at: datetime


@dataclass
class Turn:
    person_id: str
    platform: str
    chat_id: str
    message_id: str
    role: Role
    text: str
    visibility: str = PRIVATE
    thread_id: str = ""
    ts: datetime = field(default_factory=utcnow)
    source_id: str = ""
    id: str = ""
    vector: list[float] | None = None

    def __post_init__(self) -> None:
        if not self.id:
            self.id = turn_id(self.platform, self.chat_id, self.message_id, self.role)
        if not self.source_id:
            self.source_id = self.message_id


@dataclass
class Memory:
    person_id: str
    kind: MemoryKind
    text: str
    id: str
    source_turn_ids: list[str] = field(default_factory=list)
    confidence: float = 0.5
    visibility: str = PRIVATE
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    valid_from: datetime = field(default_factory=utcnow)
    valid_to: datetime | None = None
    vector: list[float] | None = None

    @property
    def current(self) -> bool:
        return self.valid_to is None
