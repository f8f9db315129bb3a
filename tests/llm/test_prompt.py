"""Prompt framing: the assistant speaks to the person, and says so when it was never told."""

from __future__ import annotations

from datetime import UTC, datetime

from core.config import Settings
from core.llm.prompt import EXAMPLE, NOT_TOLD, PromptParts, build_messages, nothing_known_about
from core.memory.recall import Recalled
from core.memory.records import Turn

PERSONA = Settings(_env_file=None).persona


def words(text: str) -> int:
    return len(text.split())


def build(message: str, *, recalled=(), recent=()) -> list[dict[str, str]]:
    parts = PromptParts(PERSONA, message, recalled=recalled, recent=recent)
    return build_messages(parts, budget_tokens=2000, count_tokens=words)


def told(text: str) -> Recalled:
    return Recalled(text=text, kind="turn", score=1.0, ts=datetime(2026, 10, 5, tzinfo=UTC))


def test_the_persona_speaks_to_the_person_not_as_them():
    assert "You are not that person" in PERSONA
    messages = build("Hi, I'm Priya. I work as a nurse.")
    assert messages[0] == {"role": "system", "content": PERSONA}
    # the worked exchange answers an introduction in the assistant's own voice
    assert list(EXAMPLE) == messages[1 : 1 + len(EXAMPLE)]
    assert "Nice to meet you, Sam" in EXAMPLE[-1]["content"]


def test_what_the_person_said_stays_in_their_own_messages():
    messages = build("What is my cat called?", recalled=[told("I have a cat called Mango.")])
    said = [m for m in messages if "Mango" in m["content"]]
    assert [m["role"] for m in said] == ["user"]
    assert said[0] is messages[-1]
    assert "I said: I have a cat called Mango." in said[0]["content"]


def test_a_question_about_something_never_said_carries_the_note():
    messages = build("What is my sister's name?", recalled=[told("I have a cat called Mango.")])
    assert messages[-1]["content"].endswith(NOT_TOLD)


def test_a_question_answered_by_what_was_said_has_no_note():
    for question, fact in [
        ("What is my cat called?", "I have a cat called Mango."),
        ("What do I do for a living?", "I work as a nurse."),
        ("Where am I living these days?", "I live in Leeds."),
        ("What am I allergic to?", "I'm allergic to peanuts."),
    ]:
        assert not nothing_known_about(question, [fact]), question
    # what was said earlier in this chat counts as known too
    recent = [
        Turn(person_id="p", platform="c", chat_id="c", message_id="1", role="user", text="My dog is Rex.")
    ]
    assert not build("What's my dog called?", recent=recent)[-1]["content"].endswith(NOT_TOLD)


def test_requests_and_name_questions_get_no_note():
    assert not nothing_known_about("Explain why the sky is blue.", [])
    assert not nothing_known_about("How can I fall asleep faster?", [])  # advice, not about me
    assert not nothing_known_about("What should I cook for my parents?", [])
    assert not nothing_known_about("What's my name?", [])  # the name is read from the introduction
