"""Open-loop detection (core/reminders/openloops.py): a table of phrases -> kind, subject, day,
including sentences that must not start a follow-up (past, someone else's, hypothetical,
negated, questions, no date)."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from core.reminders.followups import check_in_at, text_for
from core.reminders.openloops import OpenLoop, find

SAID = datetime(2026, 12, 2, 10, 0, tzinfo=ZoneInfo("Europe/Berlin"))  # a Wednesday morning

LOOPS = [
    ("my JLPT exam is on Sunday", "exam", "JLPT exam", date(2026, 12, 6)),
    ("I fly to Lisbon next Friday", "trip", "Lisbon", date(2026, 12, 4)),
    ("dentist appointment on the 12th at 3pm", "appointment", "dentist appointment", date(2026, 12, 12)),
    ("the report is due Thursday", "deadline", "report", date(2026, 12, 3)),
    ("I have a job interview at Google on Monday at 10", "interview", "job interview", date(2026, 12, 7)),
    ("My driving test is tomorrow morning", "exam", "driving test", date(2026, 12, 3)),
    ("I'm flying to New York on Dec 20", "trip", "New York", date(2026, 12, 20)),
    ("I need to submit my thesis by the 15th", "deadline", "thesis", date(2026, 12, 15)),
    ("Big exam in 3 days, so nervous", "exam", "exam", date(2026, 12, 5)),
    ("Running the Berlin half marathon on Sunday!", "event", "Berlin half marathon", date(2026, 12, 6)),
]
NOT_LOOPS = [
    "my exam was on Sunday",  # past
    "I flew to Lisbon last Friday",  # past
    "my sister's exam is on Sunday",  # someone else's
    "Tom flies to Lisbon next Friday",  # someone else
    "My brother has an interview on Monday",  # someone else
    "If I get the interview it would be on Monday",  # hypothetical
    "Maybe I'll fly to Rome on Friday",  # hypothetical
    "When is my exam on Friday?",  # a question
    "I don't have an exam on Sunday",  # negated
    "I love exams",  # no date
    "The meeting is on Friday",  # not an event we follow up
]


@pytest.mark.parametrize(("text", "kind", "subject", "day"), LOOPS)
def test_a_dated_thing_of_ones_own_is_an_open_loop(text, kind, subject, day):
    [loop] = find(text, SAID)
    assert (loop.kind, loop.subject, loop.day) == (kind, subject, day)


@pytest.mark.parametrize("text", NOT_LOOPS)
def test_past_other_peoples_hypothetical_and_undated_things_are_not(text):
    assert find(text, SAID) == []


def test_the_same_event_twice_in_a_message_is_one_loop_and_two_events_are_two():
    assert len(find("My JLPT exam is on Sunday. Yes, my JLPT exam is on Sunday!", SAID)) == 1
    two = find("My JLPT exam is on Sunday. I fly to Lisbon on the 20th.", SAID)
    assert [x.kind for x in two] == ["exam", "trip"]


def test_check_in_times_and_texts_come_from_the_event():
    tz = ZoneInfo("Europe/Berlin")
    exam = OpenLoop("exam", "JLPT exam", date(2026, 12, 6))
    assert check_in_at(exam, tz) == datetime(2026, 12, 5, 19, 0, tzinfo=tz)
    assert (
        text_for(exam) == "Your JLPT exam is on Sunday 6 Dec — good luck! Want to go over anything tonight?"
    )
    dentist = OpenLoop("appointment", "dentist appointment", date(2026, 12, 12))
    assert check_in_at(dentist, tz) == datetime(2026, 12, 13, 18, 0, tzinfo=tz)
    assert text_for(dentist) == "How did your dentist appointment on Saturday 12 Dec go?"
    report = OpenLoop("deadline", "report", date(2026, 12, 3), mine=False)
    assert text_for(report).startswith("The report is due on Thursday 3 Dec")
