"""bench/reply_quality.py's request columns score what they say: a wrong score would steer the
prompt and sampling choices made with it."""

from __future__ import annotations

import pytest

from bench.reply_quality import (
    FRESH_REQUESTS,
    HELD_OUT_REQUESTS,
    REQUESTS,
    Ask,
    drifted,
    on_task,
    people,
    wrong_name,
)

PRIYA = people(44)[0]


@pytest.mark.parametrize(
    ("reply", "wrong"),
    [
        ("Zara, hello! The sky is blue because of scattering.", True),
        ("Hi Kai, here is a poem.", True),
        ("Hello! My name is Ela, and I'll help.", True),
        ("Welcome back, Zara!", True),
        (f"Hi {PRIYA.name}, here is a poem.", False),
        ("Aw, hello there. Here is a poem.", False),
        ("Sure, here it is: 'Could you send the report by Friday?'", False),
        ("I'm Confidante, happy to help.", False),
    ],
)
def test_wrong_name(reply: str, wrong: bool) -> None:
    assert PRIYA.name == "Priya"
    assert wrong_name(reply, PRIYA) is wrong


@pytest.mark.parametrize(
    ("reply", "left"),
    [
        ("The sky is blue because air scatters blue light most.", False),
        ("それに、プートの良いです。", True),
        ("La luna es el color que los cielos tienen.", True),
        ("Try a café con leche before bed? No: skip caffeine.", False),
    ],
)
def test_drifted(reply: str, left: bool) -> None:
    assert drifted(reply) is left


def test_every_request_has_a_topic() -> None:
    """A request without a topic would count as on task whatever the reply said."""
    for request in (*REQUESTS, *HELD_OUT_REQUESTS, *FRESH_REQUESTS):
        assert not on_task(Ask(request, "request"), "Mmm, hello there! I'm so glad you're here."), request


def test_on_task() -> None:
    ask = Ask("I work as a nurse. Explain why the sky is blue.", "request")
    assert on_task(ask, "Sunlight is scattered by the air, blue light the most.")
    assert not on_task(ask, "Nursing is a wonderful job. What brings you here today?")
