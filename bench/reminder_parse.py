"""Reminder parsing accuracy: phrases with the local times they must resolve to.

Every general phrase is said at Fri 4 Dec 2026 14:00 local time in two zones (Europe/Berlin,
America/New_York) and must resolve to the same local wall time in each (so the UTC instants
differ by the zones' offsets); the DST cases are said just before each zone's autumn and
spring change and check that wall-clock times stay put while elapsed durations do not.
A recurring phrase also names its second occurrence. "ERR" means it must be refused.

    .venv/bin/python -m bench.reminder_parse [--verbose]
"""

from __future__ import annotations

import sys
from datetime import datetime
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

from core.reminders.dispatch import next_after
from core.reminders.parse import ParseError, parse
from core.reminders.store import Reminder

ZONES = ("Europe/Berlin", "America/New_York")
NOW = "2026-12-04 14:00"  # a Friday
TARGET_ACCURACY = 0.97
TARGET_DST = 1.0

# (phrase, first occurrence, second occurrence for recurring or "", what)
CASES: list[tuple[str, str, str, str]] = [
    ("remind me to call mum at 6", "2026-12-04 18:00", "", "call mum"),
    ("remind me at 6 to call mum", "2026-12-04 18:00", "", "call mum"),
    ("remind me to call mum at 6pm", "2026-12-04 18:00", "", "call mum"),
    ("remind me to call mum at 6am", "2026-12-05 06:00", "", "call mum"),
    ("remind me to call mum at 18:00", "2026-12-04 18:00", "", "call mum"),
    ("remind me to call mum at 18.30", "2026-12-04 18:30", "", "call mum"),
    ("remind me at 3 to stretch", "2026-12-04 15:00", "", "stretch"),
    ("remind me at 2 to stretch", "2026-12-05 02:00", "", "stretch"),
    ("remind me at 11 to sleep", "2026-12-04 23:00", "", "sleep"),
    ("remind me at noon to eat", "2026-12-05 12:00", "", "eat"),
    ("remind me at midnight to lock the door", "2026-12-05 00:00", "", "lock the door"),
    ("remind me at 9:15 am to join the call", "2026-12-05 09:15", "", "join the call"),
    ("remind me at 4:45pm to pick up Lea", "2026-12-04 16:45", "", "pick up Lea"),
    ("remind me in 20 minutes to take the pizza out", "2026-12-04 14:20", "", "take the pizza out"),
    ("remind me to take the pizza out in 20 minutes", "2026-12-04 14:20", "", "take the pizza out"),
    ("remind me in 5 mins to check the kettle", "2026-12-04 14:05", "", "check the kettle"),
    ("remind me in an hour to move the car", "2026-12-04 15:00", "", "move the car"),
    ("remind me in half an hour to call back", "2026-12-04 14:30", "", "call back"),
    ("remind me in two hours to water the plants", "2026-12-04 16:00", "", "water the plants"),
    ("remind me in 3 hours and 15 minutes to leave", "2026-12-04 17:15", "", "leave"),
    ("remind me in 90 minutes to stop gaming", "2026-12-04 15:30", "", "stop gaming"),
    ("remind me in 2 days to renew my passport", "2026-12-06 14:00", "", "renew my passport"),
    ("remind me in a week to follow up with Tom", "2026-12-11 14:00", "", "follow up with Tom"),
    ("remind me in a month to cancel the trial", "2027-01-04 14:00", "", "cancel the trial"),
    ("remind me tomorrow to buy bread", "2026-12-05 09:00", "", "buy bread"),
    ("remind me tomorrow at 9 to email Bob", "2026-12-05 09:00", "", "email Bob"),
    ("remind me to email Bob tomorrow at 9", "2026-12-05 09:00", "", "email Bob"),
    ("remind me tomorrow at 7pm to book tickets", "2026-12-05 19:00", "", "book tickets"),
    ("remind me tomorrow morning to run", "2026-12-05 09:00", "", "run"),
    ("remind me tomorrow evening to call Dad", "2026-12-05 18:00", "", "call Dad"),
    ("remind me tomorrow afternoon to review the PR", "2026-12-05 15:00", "", "review the PR"),
    ("remind me the day after tomorrow to pay the bill", "2026-12-06 09:00", "", "pay the bill"),
    ("remind me today at 5pm to send the report", "2026-12-04 17:00", "", "send the report"),
    ("remind me tonight to take my pills", "2026-12-04 20:00", "", "take my pills"),
    ("remind me tonight at 22:30 to set the alarm", "2026-12-04 22:30", "", "set the alarm"),
    ("remind me this evening to call Ana", "2026-12-04 18:00", "", "call Ana"),
    ("remind me on Monday to submit the form", "2026-12-07 09:00", "", "submit the form"),
    ("remind me Monday at 10 to submit the form", "2026-12-07 10:00", "", "submit the form"),
    ("remind me on Tuesday at 2pm about the dentist", "2026-12-08 14:00", "", "the dentist"),
    ("remind me next Friday to water the plants", "2026-12-11 09:00", "", "water the plants"),
    ("remind me on friday at noon about lunch with Sam", "2026-12-11 12:00", "", "lunch with Sam"),
    ("remind me friday at 6pm to leave early", "2026-12-04 18:00", "", "leave early"),
    ("remind me on Sunday evening to plan the week", "2026-12-06 18:00", "", "plan the week"),
    ("remind me on Sat at 10:30 to go to the market", "2026-12-05 10:30", "", "go to the market"),
    ("remind me on 24 December at 5pm to wrap presents", "2026-12-24 17:00", "", "wrap presents"),
    ("remind me on December 24th at 5pm to wrap presents", "2026-12-24 17:00", "", "wrap presents"),
    ("remind me on Dec 31 at 23:55 to open the champagne", "2026-12-31 23:55", "", "open the champagne"),
    ("remind me on Thu 10 Dec at 18:00 to buy milk", "2026-12-10 18:00", "", "buy milk"),
    ("remind me on the 15th to pay the rent", "2026-12-15 09:00", "", "pay the rent"),
    ("remind me on the 2nd to renew the parking permit", "2027-01-02 09:00", "", "renew the parking permit"),
    ("remind me on 3 March to file taxes", "2027-03-03 09:00", "", "file taxes"),
    ("remind me on March 3rd 2027 at 8am to file taxes", "2027-03-03 08:00", "", "file taxes"),
    ("remind me on 2027-01-15 to book the flights", "2027-01-15 09:00", "", "book the flights"),
    ("remind me on 2027-01-15 at 13:45 to book the flights", "2027-01-15 13:45", "", "book the flights"),
    ("remind me on the 1st of January to call grandma", "2027-01-01 09:00", "", "call grandma"),
    ("please remind me at 8pm to feed the cat", "2026-12-04 20:00", "", "feed the cat"),
    ("can you remind me in 10 minutes to check the oven", "2026-12-04 14:10", "", "check the oven"),
    ("/remind in 15 minutes stand up", "2026-12-04 14:15", "", "stand up"),
    ("/remind tomorrow at 8 gym", "2026-12-05 08:00", "", "gym"),
    ("remind me every day at 8 to take vitamins", "2026-12-05 08:00", "2026-12-06 08:00", "take vitamins"),
    ("remind me every day at 8am to take vitamins", "2026-12-05 08:00", "2026-12-06 08:00", "take vitamins"),
    ("remind me daily at 21:00 to journal", "2026-12-04 21:00", "2026-12-05 21:00", "journal"),
    ("remind me every weekday at 8 to check email", "2026-12-07 08:00", "2026-12-08 08:00", "check email"),
    ("every weekday at 8 remind me to check email", "2026-12-07 08:00", "2026-12-08 08:00", "check email"),
    (
        "remind me every Monday at 9 to ask how the run went",
        "2026-12-07 09:00",
        "2026-12-14 09:00",
        "ask how the run went",
    ),
    (
        "remind me every monday and thursday at 7pm to go to the gym",
        "2026-12-07 19:00",
        "2026-12-10 19:00",
        "go to the gym",
    ),
    (
        "remind me every Friday at 5pm to send the timesheet",
        "2026-12-04 17:00",
        "2026-12-11 17:00",
        "send the timesheet",
    ),
    (
        "remind me every other Wednesday at 10 to water the ficus",
        "2026-12-09 10:00",
        "2026-12-23 10:00",
        "water the ficus",
    ),
    ("remind me on Tuesdays at 18:30 to go to choir", "2026-12-08 18:30", "2026-12-15 18:30", "go to choir"),
    ("remind me every weekend at 10 to call home", "2026-12-05 10:00", "2026-12-06 10:00", "call home"),
    ("remind me on the 3rd of every month to pay rent", "2027-01-03 09:00", "2027-02-03 09:00", "pay rent"),
    (
        "remind me to pay rent on the 3rd of every month at 10am",
        "2027-01-03 10:00",
        "2027-02-03 10:00",
        "pay rent",
    ),
    (
        "remind me every month on the 20th to check the budget",
        "2026-12-20 09:00",
        "2027-01-20 09:00",
        "check the budget",
    ),
    ("remind me every morning to stretch", "2026-12-05 09:00", "2026-12-06 09:00", "stretch"),
    ("remind me every evening to read", "2026-12-04 18:00", "2026-12-05 18:00", "read"),
    ("remind me every 2 hours to drink water", "2026-12-04 16:00", "2026-12-04 18:00", "drink water"),
    ("remind me every hour to stand up", "2026-12-04 15:00", "2026-12-04 16:00", "stand up"),
    (
        "remind me every 30 minutes to look away from the screen",
        "2026-12-04 14:30",
        "2026-12-04 15:00",
        "look away from the screen",
    ),
    (
        "remind me every week to back up the laptop",
        "2026-12-11 09:00",
        "2026-12-18 09:00",
        "back up the laptop",
    ),
    (
        "remind me weekly on Sunday at 19:00 to plan meals",
        "2026-12-06 19:00",
        "2026-12-13 19:00",
        "plan meals",
    ),
    (
        "remind me every year on 12 March to wish Kim happy birthday",
        "2027-03-12 09:00",
        "2028-03-12 09:00",
        "wish Kim happy birthday",
    ),
    ("remind me every day at 6 to walk the dog", "2026-12-04 18:00", "2026-12-05 18:00", "walk the dog"),
    ("remind me every day at 7:00 to walk the dog", "2026-12-05 07:00", "2026-12-06 07:00", "walk the dog"),
    # refusals: no time, a past date, nonsense times, nothing to remind about, too frequent
    ("remind me to call mum", "ERR", "", ""),
    ("remind me about the thing", "ERR", "", ""),
    ("remind me on 2026-12-01 to pay", "ERR", "", ""),
    ("remind me on 2026-02-30 to pay", "ERR", "", ""),
    ("remind me at 13pm to eat", "ERR", "", ""),
    ("remind me tomorrow at 9", "ERR", "", ""),
    ("remind me every minute to blink", "ERR", "", ""),
    ("remind me every 2 minutes to blink", "ERR", "", ""),
    ("remind me on the 31st of February to party", "ERR", "", ""),
    ("remind me yesterday to do it", "ERR", "", ""),
]

# written after the parser was done and not tuned on: how it does on phrasings it has not seen
HELD_OUT: list[tuple[str, str, str, str]] = [
    ("remind me to check the mail at 5", "2026-12-04 17:00", "", "check the mail"),
    ("remind me in 45 minutes to call the plumber", "2026-12-04 14:45", "", "call the plumber"),
    ("remind me on Wednesday at 3pm to submit expenses", "2026-12-09 15:00", "", "submit expenses"),
    ("remind me next Monday morning to call the bank", "2026-12-07 09:00", "", "call the bank"),
    (
        "remind me every Tuesday at 7:30 to put the bins out",
        "2026-12-08 07:30",
        "2026-12-15 07:30",
        "put the bins out",
    ),
    ("remind me on 1 Feb to renew the insurance", "2027-02-01 09:00", "", "renew the insurance"),
    ("remind me tomorrow at noon to call Grandpa", "2026-12-05 12:00", "", "call Grandpa"),
    ("remind me in 3 days to return the library books", "2026-12-07 14:00", "", "return the library books"),
    ("remind me at 9pm to take out the laundry", "2026-12-04 21:00", "", "take out the laundry"),
    (
        "remind me every day at 10pm to brush my teeth",
        "2026-12-04 22:00",
        "2026-12-05 22:00",
        "brush my teeth",
    ),
    ("remind me on Christmas Eve to call Tante Anna", "2026-12-24 09:00", "", "call Tante Anna"),
    ("remind me at 8:15 to leave for the train", "2026-12-04 20:15", "", "leave for the train"),
    ("remind me in 2 weeks to book the dentist", "2026-12-18 14:00", "", "book the dentist"),
    (
        "remind me every Sunday evening to plan the week",
        "2026-12-06 18:00",
        "2026-12-13 18:00",
        "plan the week",
    ),
    (
        "remind me on the 10th at 11am to pay the electricity bill",
        "2026-12-10 11:00",
        "",
        "pay the electricity bill",
    ),
    ("remind me Saturday at 9 to go running", "2026-12-05 09:00", "", "go running"),
    ("remind me this afternoon to call the school", "2026-12-04 15:00", "", "call the school"),
    (
        "remind me in 1 hour and 30 minutes to take the bread out",
        "2026-12-04 15:30",
        "",
        "take the bread out",
    ),
    (
        "remind me every first Monday of the month to review goals",
        "2026-12-07 09:00",
        "2027-01-04 09:00",
        "review goals",
    ),
    ("remind me tomorrow night to charge the car", "2026-12-05 20:00", "", "charge the car"),
    # written before the fixes for "Christmas Eve", an "8:15" after 08:15 and "every first
    # Monday of the month", and not tuned on: do those fixes carry over to their neighbours?
    ("remind me on New Year's Eve at 8pm to call grandma", "2026-12-31 20:00", "", "call grandma"),
    ("remind me at 7:45 to take the cake out", "2026-12-04 19:45", "", "take the cake out"),
    (
        "remind me every last Friday of the month to send invoices",
        "2026-12-25 09:00",
        "2027-01-29 09:00",
        "send invoices",
    ),
    ("remind me on Christmas Day at 10 to call my parents", "2026-12-25 10:00", "", "call my parents"),
    ("remind me at 10:05 to check the oven", "2026-12-04 22:05", "", "check the oven"),
    (
        "remind me every second Tuesday of the month at 18:00 to go to the book club",
        "2026-12-08 18:00",
        "2027-01-12 18:00",
        "go to the book club",
    ),
]

# (phrase, zone, now, first, second, note)
DST: list[tuple[str, str, str, str, str]] = [
    # autumn: Berlin falls back on Sun 25 Oct 2026 03:00 -> 02:00; New York on Sun 1 Nov 2026
    (
        "remind me every day at 8 to run",
        "Europe/Berlin",
        "2026-10-24 09:00",
        "2026-10-25 08:00",
        "2026-10-26 08:00",
    ),
    ("remind me tomorrow at 9 to call", "Europe/Berlin", "2026-10-24 12:00", "2026-10-25 09:00", ""),
    ("remind me in 24 hours to call", "Europe/Berlin", "2026-10-24 12:00", "2026-10-25 11:00", ""),
    ("remind me in 1 day to call", "Europe/Berlin", "2026-10-24 12:00", "2026-10-25 11:00", ""),
    (
        "remind me every Sunday at 2:30 to check the clock",
        "Europe/Berlin",
        "2026-10-20 12:00",
        "2026-10-25 02:30",
        "2026-11-01 02:30",
    ),
    (
        "remind me every day at 8 to run",
        "America/New_York",
        "2026-10-31 09:00",
        "2026-11-01 08:00",
        "2026-11-02 08:00",
    ),
    ("remind me in 2 hours to leave", "America/New_York", "2026-11-01 00:30", "2026-11-01 01:30", ""),
    (
        "remind me every weekday at 9 to stand up",
        "America/New_York",
        "2026-10-30 10:00",
        "2026-11-02 09:00",
        "2026-11-03 09:00",
    ),
    # spring: Berlin springs forward on Sun 28 Mar 2027 02:00 -> 03:00; New York on Sun 14 Mar 2027
    (
        "remind me every day at 8 to run",
        "Europe/Berlin",
        "2027-03-27 09:00",
        "2027-03-28 08:00",
        "2027-03-29 08:00",
    ),
    (
        "remind me tomorrow at 2:30 to check the clock",
        "Europe/Berlin",
        "2027-03-27 12:00",
        "2027-03-28 03:30",
        "",
    ),
    ("remind me in 24 hours to call", "Europe/Berlin", "2027-03-27 12:00", "2027-03-28 13:00", ""),
    (
        "remind me every day at 8 to run",
        "America/New_York",
        "2027-03-13 09:00",
        "2027-03-14 08:00",
        "2027-03-15 08:00",
    ),
    ("remind me in 3 hours to leave", "America/New_York", "2027-03-14 00:30", "2027-03-14 04:30", ""),
    (
        "remind me on the 14th of every month at 2:30am to check the clock",
        "America/New_York",
        "2027-03-10 12:00",
        "2027-03-14 03:30",
        "2027-04-14 02:30",
    ),
]


def _local(raw: str, tz: str) -> datetime:
    return datetime.fromisoformat(raw).replace(tzinfo=ZoneInfo(tz))


def _second(p, tz: str) -> datetime | None:
    r = Reminder(
        "x",
        "p",
        "t",
        "c",
        "direct",
        None,
        "s",
        p.what,
        tz,
        p.rule,
        p.first.replace(tzinfo=None).isoformat(),
        p.every,
        p.first,
        p.first,
        "active",
    )
    return next_after(r, p.first)


def check(phrase: str, tz: str, now: str, first: str, second: str, what: str) -> tuple[bool, str]:
    try:
        p = parse(phrase, _local(now, tz), tz)
    except ParseError:
        return first == "ERR", "refused"
    got = f"{p.first.astimezone(ZoneInfo(tz)):%Y-%m-%d %H:%M}"
    ok = got == first  # the local wall time in the person's zone (after a DST gap: the shifted one)
    if second:
        nxt = _second(p, tz) if p.rule else None
        got += f" / {nxt:%Y-%m-%d %H:%M}" if nxt else " / none"
        ok = ok and nxt is not None and f"{nxt:%Y-%m-%d %H:%M}" == second
    if what:
        ok = ok and p.what == what
        got += f" “{p.what}”"
    return ok, got


def main() -> int:
    verbose = "--verbose" in sys.argv
    console = Console()
    rows = []
    for phrase, first, second, what in CASES:
        for tz in ZONES:
            ok, got = check(phrase, tz, NOW, first, second, what)
            rows.append(("general", phrase, tz, first + (f" / {second}" if second else ""), got, ok))
    for phrase, first, second, what in HELD_OUT:
        for tz in ZONES:
            ok, got = check(phrase, tz, NOW, first, second, what)
            rows.append(("held-out", phrase, tz, first + (f" / {second}" if second else ""), got, ok))
    for phrase, tz, now, first, second in DST:
        ok, got = check(phrase, tz, now, first, second, "")
        rows.append(("dst", phrase, tz, first + (f" / {second}" if second else ""), got, ok))

    table = Table(title="Reminder parsing (expected = local wall time in the zone)")
    for col in ("set", "phrase", "zone", "expected", "got", "ok"):
        table.add_column(col)
    for row in rows:
        if verbose or not row[-1]:
            table.add_row(*row[:-1], "yes" if row[-1] else "NO")
    console.print(table)

    def rate(kind: str) -> tuple[int, int]:
        sel = [r for r in rows if r[0] == kind]
        return sum(r[-1] for r in sel), len(sel)

    g_ok, g_n = rate("general")
    d_ok, d_n = rate("dst")
    summary = Table(title="Targets")
    for col in ("measure", "value", "target", "met"):
        summary.add_column(col)
    g, d = g_ok / g_n, d_ok / d_n
    summary.add_row(
        "general phrases x 2 zones",
        f"{g_ok}/{g_n} = {g:.1%}",
        f">= {TARGET_ACCURACY:.0%}",
        "met" if g >= TARGET_ACCURACY else "MISSED",
    )
    h_ok, h_n = rate("held-out")
    summary.add_row("held-out phrases x 2 zones", f"{h_ok}/{h_n} = {h_ok / h_n:.1%}", "reported", "-")
    summary.add_row(
        "across DST changes",
        f"{d_ok}/{d_n} = {d:.1%}",
        f"{TARGET_DST:.0%}",
        "met" if d >= TARGET_DST else "MISSED",
    )
    console.print(summary)
    console.print(
        f"phrases: {len(CASES)} general + {len(HELD_OUT)} held-out + {len(DST)} DST; checks: {len(rows)}"
    )
    return 0 if g >= TARGET_ACCURACY and d >= TARGET_DST else 1


if __name__ == "__main__":
    raise SystemExit(main())
