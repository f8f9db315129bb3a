"""Parsing: the bench's phrases resolve to their times in both zones and across DST changes;
what it cannot read is refused with an example, never guessed."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from bench.reminder_parse import CASES, DST, NOW, ZONES, check
from core.reminders.parse import ParseError, confirmation, is_request, parse, zone


@pytest.mark.parametrize("tz", ZONES)
def test_every_bench_phrase_resolves_to_its_local_time(tz: str) -> None:
    wrong = [
        (p, got)
        for p, first, second, what in CASES
        if not (r := check(p, tz, NOW, first, second, what))[0]
        for got in [r[1]]
    ]
    assert wrong == []


def test_wall_clock_times_survive_dst_and_durations_do_not() -> None:
    wrong = [
        (p, tz, got)
        for p, tz, now, first, second in DST
        if not (r := check(p, tz, now, first, second, ""))[0]
        for got in [r[1]]
    ]
    assert wrong == []


def test_the_same_words_in_two_zones_are_different_instants() -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=ZoneInfo("UTC"))
    berlin = parse("remind me at 18:00 to call mum", now, "Europe/Berlin").first
    new_york = parse("remind me at 18:00 to call mum", now, "America/New_York").first
    assert (new_york - berlin).total_seconds() == 6 * 3600


def test_confirmation_names_the_exact_local_time() -> None:
    now = datetime(2026, 12, 4, 14, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    p = parse("remind me to call mum at 6", now, "Europe/Berlin")
    assert confirmation(p, now) == "I'll remind you on Fri 4 Dec at 18:00 (Europe/Berlin): call mum"
    weekly = parse("every Monday at 9 ask me how the run went", now, "Europe/Berlin")
    assert confirmation(weekly, now).startswith(
        "I'll remind you every Monday at 09:00 (Europe/Berlin), first on Mon 7 Dec at 09:00"
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("remind me to call mum", "couldn't tell when"),
        ("remind me on 2026-12-01 to pay", "already passed"),
        ("remind me tomorrow at 9", "What should I remind you about"),
        ("remind me every minute to blink", "every 5 minutes"),
    ],
)
def test_bad_requests_are_refused_with_what_works(text: str, says: str) -> None:
    with pytest.raises(ParseError, match=says):
        parse(text, datetime(2026, 12, 4, 14, 0, tzinfo=ZoneInfo("Europe/Berlin")), "Europe/Berlin")


def test_unknown_zone_is_a_clear_error() -> None:
    with pytest.raises(ParseError, match="Europe/Berlin"):
        zone("Mars/Olympus")


def test_only_remind_me_messages_are_requests() -> None:
    assert is_request("Remind me to call mum at 6")
    assert is_request("please remind me in 5 minutes to stretch")
    assert not is_request("what did I ask you to remind me about?")
    assert not is_request("my mum reminds me of you")
    assert not is_request("remind me what my cat is called?")  # a memory question
    assert is_request("@ConfidanteTestBot remind me friday at noon about lunch")
    assert all(
        is_request(p)
        for p, first, _, _ in CASES
        if first != "ERR" and p.lower().startswith(("remind me", "please remind", "can you remind"))
    )


def test_named_days_an_unpadded_time_after_its_morning_hour_and_the_nth_weekday_of_a_month() -> None:
    tz = "Europe/Berlin"
    seven_pm = datetime(2026, 12, 4, 19, 0, tzinfo=ZoneInfo(tz))
    assert parse("remind me at 8:15 to leave", seven_pm, tz).first.strftime("%d %H:%M") == "04 20:15"
    assert parse("remind me at 08:15 to leave", seven_pm, tz).first.strftime("%d %H:%M") == "05 08:15"
    assert parse("remind me on Christmas Eve to call Anna", seven_pm, tz).first.strftime("%m-%d") == "12-24"
    first = parse("remind me every first Monday of the month to review goals", seven_pm, tz)
    assert first.first.strftime("%Y-%m-%d %H:%M") == "2026-12-07 09:00"
    assert first.every == "every first Monday of the month at 09:00"
