"""Questions about the person are answered from what they told; the reply never speaks as them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from core.assistant import Assistant
from core.grounding import (
    NOT_TOLD,
    SlipGuard,
    as_statement,
    asks_about_person,
    for_reply,
    ground,
    reply_stream,
    second_person,
)
from core.memory.recall import Recalled
from tests.helpers import dm, say


@pytest.mark.parametrize(
    ("text", "about"),
    [
        ("What is my cat called?", True),
        ("Where do I work?", True),
        ("What am I training for?", True),
        ("In which month is my birthday?", True),
        ("Do you remember my name?", True),
        ("How can I fall asleep faster?", False),
        ("What should I cook tonight?", False),
        ("What's a good way to start running?", False),
        ("Explain why the sky is blue.", False),
        ("what did I ask about?", False),  # the conversation, which the prompt holds
    ],
)
def test_question_about_the_person_is_recognised(text: str, about: bool) -> None:
    assert asks_about_person(text) is about


def test_statement_is_said_back_in_the_second_person() -> None:
    assert second_person("I'm training for the Berlin marathon") == "you're training for the Berlin marathon"
    assert second_person("My sister's name is Ingrid") == "your sister's name is Ingrid"


def _turn(text: str) -> Recalled:
    return Recalled(text=text, kind="turn", score=1.0, ts=datetime(2026, 1, 1, tzinfo=UTC))


def test_best_statement_above_the_threshold_grounds_the_reply(embedder) -> None:
    def embed(texts: list[str]) -> list[list[float]]:
        return [v.tolist() for v in embedder.embed(texts)]

    told = [_turn("Hi, I'm Priya. I work as a nurse. I live in Leeds."), _turn("I have a cat called Mango.")]
    cat = ground("What is my cat called?", told, embed)
    assert cat is not None and cat.known and cat.opening == "You told me you have a cat called Mango."
    name = ground("What's my name?", told, embed)
    assert name is not None and name.opening == "Your name is Priya."
    never = ground("Which instrument do I play?", told, embed)
    assert never is not None and not never.known and never.opening == NOT_TOLD
    assert ground("How can I sleep better?", told, embed) is None


@pytest.mark.parametrize(
    ("question", "statement"),
    [
        ("Which race am I getting ready for?", "I am getting ready for the race"),
        ("Where did I grow up?", "I grew up in some place"),
        ("What did I name my dog?", "I named my dog something"),
        ("What's my job?", "my job is something"),
        ("What is my cat called?", "my cat is called something"),
        ("In which month is my birthday?", "my birthday is the month"),
        ("Do you remember my cat's name?", "my cat's name is"),
        ("Who am I?", "My name is"),
        ("Who am I married to?", "I am married to someone"),
        ("How can I sleep better?", "How can I sleep better?"),  # no question about a fact: as it is
    ],
)
def test_question_is_matched_as_the_statement_that_would_answer_it(question: str, statement: str) -> None:
    assert as_statement(question) == statement


def test_paraphrased_question_finds_what_was_said_and_a_name_is_said_plainly(embedder) -> None:
    def embed(texts: list[str]) -> list[list[float]]:
        return [v.tolist() for v in embedder.embed(texts)]

    told = [
        _turn("Hi there, I'm Dilnoza. My cat is named Olive."),
        _turn("I'm studying Hindi. I drive a Honda."),
    ]
    cat = ground("What do I call my cat?", told, embed)
    assert cat is not None and cat.opening == "You told me your cat is named Olive."
    language = ground("What language am I taking lessons in?", told, embed)
    assert language is not None and language.opening == "You told me you're studying Hindi."
    name = ground("Who am I?", told, embed)
    assert name is not None and name.opening == "Your name is Dilnoza."
    # asked about something else, nothing said about it is an answer
    for never in ("What's my dog's name?", "Which instrument do I play?", "Who is my wife?"):
        answer = ground(never, told, embed)
        assert answer is not None and not answer.known, never


@pytest.mark.parametrize(
    ("told", "asked"),
    [
        ("Hey, Tomasz here. I drive a Volvo.", "Do you remember who I am?"),
        ("My name's Tomasz, by the way. I drive a Volvo.", "What's my name again?"),
        ("Hi there, I'm Tomasz. I drive a Volvo.", "What name do I go by?"),
    ],
)
def test_a_name_question_is_answered_by_what_they_said_their_name_is(embedder, told: str, asked: str) -> None:
    def embed(texts: list[str]) -> list[list[float]]:
        return [v.tolist() for v in embedder.embed(texts)]

    answer = ground(asked, [_turn(told)], embed)
    assert answer is not None and answer.known and answer.opening == "Your name is Tomasz."
    # and nobody else's: with no name said, the name is not made up from another statement
    nothing = ground(asked, [_turn("I drive a Volvo.")], embed)
    assert nothing is not None and not nothing.known


def test_what_was_said_back_reads_as_one_sentence(embedder) -> None:
    from core.grounding import statements

    # a short ", I'm ..." stays with its statement: "you're allergic" alone answers nothing
    assert statements([_turn("I can't eat cashews, I'm allergic.")]) == [
        ("I can't eat cashews, I'm allergic", "you can't eat cashews, you're allergic")
    ]
    assert len(statements([_turn("Hi, I'm Priya, I work as a nurse and I live in Leeds.")])) == 3

    def embed(texts: list[str]) -> list[list[float]]:
        return [v.tolist() for v in embedder.embed(texts)]

    home = ground("Where do I live?", [_turn("These days I live in Tallinn.")], embed)
    assert home is not None and home.opening == "You told me these days you live in Tallinn."


async def _chunks(*parts: str) -> AsyncIterator[str]:
    for part in parts:
        yield part


async def _shown(guard: SlipGuard, *parts: str) -> list[str]:
    return [delta async for delta in guard.guard(_chunks(*parts))]


async def test_a_slip_is_turned_to_the_second_person() -> None:
    guard = SlipGuard("Priya", ["I have a cat called Mango", "I work as a nurse"])
    shown = await _shown(guard, "I'm Pri", "ya and my cat", " Mango is lovely. ", "Sleep well", " tonight.")
    assert "".join(shown) == "You're Priya and your cat Mango is lovely. Sleep well tonight."
    # a sentence that claims nothing is shown as it comes, not held to its end
    assert shown[-2:] == ["Sleep well", " tonight."]
    plain = await _shown(guard, "I think a short walk helps. Tell me about Mango.")
    assert "".join(plain) == "I think a short walk helps. Tell me about Mango."
    # another person's guard leaves the same sentence alone: the check is per reply
    other = SlipGuard("Tomasz", ["I drive a Volvo"])
    assert "".join(await _shown(other, "I'm Priya and my cat Mango is lovely.")) == (
        "I'm Priya and my cat Mango is lovely."
    )


async def test_the_message_being_answered_is_the_persons_own_too() -> None:
    """A first message has no recall yet: what it says is already the person's, and a reply
    that echoes it as its own is a slip (seen in bench/reply_quality.py)."""
    said = "Hi, I'm Mateo. I'm allergic to pollen. Can you help me write an email?"
    _, guard = for_reply(said, "Mateo", [], [], lambda texts: [], grounded=False)
    shown = "".join(await _shown(guard, "(Mateo, I'm allergic to pollen.) ", "I can help with the email."))
    assert shown == "(Mateo, you're allergic to pollen.) I can help with the email."


async def test_question_with_nothing_told_gets_you_havent_told_me(assistant: Assistant) -> None:
    reply = await say(assistant, dm("What is my cat called?", person="noor"))
    assert reply is not None and reply.startswith(NOT_TOLD)


async def test_told_fact_answers_in_a_later_session_per_row_in_one_batch(assistant: Assistant) -> None:
    await say(assistant, dm("I have a cat called Mango.", person="priya", chat_id="s1"))
    await say(assistant, dm("I drive a Volvo.", person="omar", chat_id="s1"))
    # both asked at once: the engine batches the two replies, each grounded on its own recall
    priya, omar = await asyncio.gather(
        say(assistant, dm("What is my cat called?", person="priya", chat_id="s2")),
        say(assistant, dm("What is my cat called?", person="omar", chat_id="s2")),
    )
    # the small model's profile lets it add nothing after the opening (core/llm/profiles.py)
    assert priya == "You told me you have a cat called Mango."
    assert omar == NOT_TOLD


async def test_grounded_row_continues_the_same_alone_and_in_a_batch(tiny_model, settings) -> None:
    """A row continuing a given opening and a plain row in one batch each get what they get alone."""
    from core.grounding import Grounding
    from core.llm.engine import Engine

    engine = Engine(tiny_model, settings)
    opening = Grounding("You told me you have a cat called Mango.", known=True, continue_tokens=12)
    grounded = [{"role": "user", "content": "What is my cat called?"}]
    plain = [{"role": "user", "content": "Write a poem about the sea."}]

    async def text(messages: list[dict[str, str]], grounding: Grounding | None) -> str:
        return "".join([d async for d in reply_stream(engine, messages, grounding=grounding, temperature=0)])

    try:
        alone = [await text(grounded, opening), await text(plain, None)]
        together = await asyncio.gather(text(grounded, opening), text(plain, None))
    finally:
        engine.close()
    assert alone[0].startswith(opening.opening)
    assert list(together) == alone


async def test_what_follows_an_opening_is_one_whole_sentence_or_nothing() -> None:
    from core.grounding import one_sentence

    assert [d async for d in one_sentence(_chunks(" She", " is lovely.", " She is lovely.", " And"))] == [
        " She is lovely."
    ]
    assert [d async for d in one_sentence(_chunks(" She is", " lovely and"))] == []  # cut by the cap
    assert [d async for d in one_sentence(_chunks(" Enjoy!"))] == [" Enjoy!"]
    # a sentence that takes the grounded opening back is left out
    assert [d async for d in one_sentence(_chunks(" I'm sorry, but", " you don't have a cat."))] == []
    assert [d async for d in one_sentence(_chunks(" That is not true."))] == []


async def test_in_a_group_nothing_private_is_said_back(assistant: Assistant) -> None:
    """Even where the person opened their profile (`/share here`), an answer in a group is read
    by everybody there and enters their prompts: no grounded opening in groups."""
    from tests.helpers import group

    await say(assistant, dm("I have a cat called Mango.", person="priya", platform="telegram"))
    await say(assistant, group("/share here", "priya"))
    reply = await say(assistant, group("What is my cat called?", "priya"))
    assert reply is not None and not reply.startswith(("You told me", NOT_TOLD))
