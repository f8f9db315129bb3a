"""Time phrases in questions, counted from a fixed now (Wednesday 12 June 2024)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.memory.when import asks_for_now, parse_when

NOW = datetime(2024, 6, 12, 15, 0, tzinfo=UTC)


def d(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("what did I cook last week?", d(2024, 6, 3), d(2024, 6, 10)),
        ("where did I eat in May?", d(2024, 5, 1), d(2024, 6, 1)),
        ("in September?", d(2023, 9, 1), d(2023, 10, 1)),  # a month still to come means last year's
        ("what happened in March 2023", d(2023, 3, 1), d(2023, 4, 1)),
        ("on 8 May 2023", d(2023, 5, 8), d(2023, 5, 9)),
        ("May 8th", d(2024, 5, 8), d(2024, 5, 9)),
        ("yesterday", d(2024, 6, 11), d(2024, 6, 12)),
        ("last weekend", d(2024, 6, 8), d(2024, 6, 10)),
        ("last summer", d(2023, 6, 1), d(2023, 9, 1)),
        ("last december", d(2023, 12, 1), d(2024, 1, 1)),
        ("in 2023", d(2023, 1, 1), d(2024, 1, 1)),
        ("late April", d(2024, 4, 21), d(2024, 5, 1)),
        ("on 2024-02-03", d(2024, 2, 3), d(2024, 2, 4)),
        ("since January", d(2024, 1, 1), None),
        ("before March 2024", None, d(2024, 3, 1)),
    ],
)
def test_spans(text: str, start, end) -> None:
    when = parse_when(text, NOW)
    assert when is not None and (when.start, when.end) == (start, end)


def test_ago_is_a_window_around_then() -> None:
    when = parse_when("what did I do two weeks ago", NOW)
    assert when.contains(d(2024, 5, 29)) and not when.contains(d(2024, 6, 10))


def test_events_become_anchors() -> None:
    when = parse_when("where did I live before I moved to Berlin?", NOW)
    assert when.anchor == "I moved to Berlin" and when.direction == "before"


@pytest.mark.parametrize("text", ["May I ask you something?", "what is my sister called", "31 February", ""])
def test_no_time(text: str) -> None:
    assert parse_when(text, NOW) is None


def test_now_questions() -> None:
    assert asks_for_now("where do I work now?") and not asks_for_now("where did I work?")
