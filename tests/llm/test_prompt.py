"""Prompt framing: what the person said stays in their own messages, never in the assistant's voice."""

from __future__ import annotations

from datetime import UTC, datetime

from core.config import Settings
from core.llm.prompt import PromptParts, build_messages
from core.memory.recall import Recalled

PERSONA = Settings(_env_file=None).persona


def words(text: str) -> int:
    return len(text.split())


def build(message: str, *, recalled=(), recent=()) -> list[dict[str, str]]:
    parts = PromptParts(PERSONA, message, recalled=recalled, recent=recent)
    return build_messages(parts, budget_tokens=2000, count_tokens=words)


def told(text: str) -> Recalled:
    return Recalled(text=text, kind="turn", score=1.0, ts=datetime(2026, 10, 5, tzinfo=UTC))


def test_what_the_person_said_stays_in_their_own_messages():
    messages = build("What is my cat called?", recalled=[told("I have a cat called Mango.")])
    said = [m for m in messages if "Mango" in m["content"]]
    assert [m["role"] for m in said] == ["user"]
    assert said[0] is messages[-1]
    assert "I said: I have a cat called Mango." in said[0]["content"]
