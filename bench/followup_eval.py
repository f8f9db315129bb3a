"""Open-loop detection accuracy (core/reminders/openloops.py): does a sentence start a follow-up?

Each phrase is said on Wed 2 Dec 2026 at 10:00 (Europe/Berlin). A positive names the kind and
the event's day it must resolve to; a negative (past, someone else's, hypothetical, negated,
a question, no date, not an event we follow up) must give nothing. A detection counts as a true
positive only with the right kind and day; a wrong kind or day counts as a false positive and a
miss both (a check-in at the wrong time is worse than none). Precision matters more than recall:
every false positive is an unasked message about something that isn't happening.

The phrases below were written for this table, not taken from the tests; the "held-out" block
was written after the detector was done and was not tuned on.

    .venv/bin/python -m bench.followup_eval [--verbose]
"""

from __future__ import annotations

import sys
from datetime import date, datetime
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

from bench.targets import Targets
from core.reminders.openloops import find

SAID = datetime(2026, 12, 2, 10, 0, tzinfo=ZoneInfo("Europe/Berlin"))  # a Wednesday
TARGET_PRECISION = 0.95
TARGET_RECALL = 0.75

# (phrase, kind or "" for none, day "YYYY-MM-DD" or "")
CASES: list[tuple[str, str, str]] = [
    ("My calculus exam is on Friday", "exam", "2026-12-04"),
    ("I have my German B2 exam on the 10th", "exam", "2026-12-10"),
    ("the TOEFL is on Saturday and I'm terrified", "exam", "2026-12-05"),
    ("I've got a final interview with Spotify on Thursday", "interview", "2026-12-03"),
    ("Interview at the bank tomorrow at 9am", "interview", "2026-12-03"),
    ("I'm giving a presentation to the board on Monday", "presentation", "2026-12-07"),
    ("My talk at PyCon is on 14 December", "presentation", "2026-12-14"),
    ("the grant proposal is due Friday", "deadline", "2026-12-04"),
    ("My assignment is due on the 9th", "deadline", "2026-12-09"),
    ("I have to hand in my essay by the 11th", "deadline", "2026-12-11"),
    ("I fly to Madrid on Saturday", "trip", "2026-12-05"),
    ("We're flying to Tokyo on December 19", "trip", "2026-12-19"),
    ("I'm leaving for Vienna tomorrow", "trip", "2026-12-03"),
    ("I'm driving to Hamburg on Sunday", "trip", "2026-12-06"),
    ("I have a dentist appointment on Monday at 8:30", "appointment", "2026-12-07"),
    ("Doctor's appointment on Friday afternoon, finally", "appointment", "2026-12-04"),
    ("My knee surgery is on the 15th", "appointment", "2026-12-15"),
    ("I've got a vet appointment for the cat on Thursday", "appointment", "2026-12-03"),
    ("Running my first marathon on Sunday!", "event", "2026-12-06"),
    ("My piano recital is on the 13th", "event", "2026-12-13"),
    ("My brother's wedding is on Saturday", "", ""),
    ("My exam was on Monday and it went fine", "", ""),
    ("I flew to Madrid last week", "", ""),
    ("Lena has an interview on Thursday", "", ""),
    ("My mum has a doctor's appointment on Friday", "", ""),
    ("If I pass the interview I might fly to Tokyo on the 19th", "", ""),
    ("I would love to fly to Lisbon someday", "", ""),
    ("Is my dentist appointment on Monday?", "", ""),
    ("The exam isn't on Friday after all", "", ""),
    ("My flight to Oslo got cancelled", "", ""),
    ("I hate exams", "", ""),
    ("I'm meeting Sam for coffee on Friday", "", ""),
    ("We should go to Paris sometime", "", ""),
    ("Their presentation is on Monday", "", ""),
    ("My sister flies to Rome on Saturday", "", ""),
    ("I had a dentist appointment yesterday", "", ""),
    ("Can you help me prepare for the exam?", "", ""),
    ("The sun was out all day", "", ""),
    ("I passed my driving test!", "", ""),
    ("My report was due last Friday", "", ""),
]
HELD_OUT: list[tuple[str, str, str]] = [
    ("Big day on Friday: my thesis defence", "presentation", "2026-12-04"),
    ("I've got my citizenship test on the 17th", "exam", "2026-12-17"),
    ("Heading to Prague on Sunday for work", "trip", "2026-12-06"),
    ("The tax return deadline is on the 31st", "deadline", "2026-12-31"),
    ("I have a hospital appointment next Tuesday", "appointment", "2026-12-08"),
    ("Tom's exam is on Friday", "", ""),
    ("If the interview happens it'll be on Monday", "", ""),
    ("I took the JLPT last Sunday", "", ""),
]


def judge(phrase: str, kind: str, day: str) -> tuple[int, int, int, str]:
    """(true positives, false positives, misses, what was found)."""
    found = find(phrase, SAID)
    got = ", ".join(f"{x.kind} {x.day} “{x.subject}”" for x in found) or "-"
    if not kind:
        return 0, len(found), 0, got
    right = [x for x in found if x.kind == kind and x.day == date.fromisoformat(day)]
    tp = 1 if right else 0
    return tp, len(found) - tp, 1 - tp, got


def main() -> int:
    verbose = "--verbose" in sys.argv
    table = Table(title="Open loops (said Wed 2 Dec 2026 10:00)")
    for col in ("set", "phrase", "expected", "found", "ok"):
        table.add_column(col)
    totals = {"general": [0, 0, 0], "held-out": [0, 0, 0]}
    positives = {"general": 0, "held-out": 0}
    for name, cases in (("general", CASES), ("held-out", HELD_OUT)):
        for phrase, kind, day in cases:
            tp, fp, miss, got = judge(phrase, kind, day)
            for i, v in enumerate((tp, fp, miss)):
                totals[name][i] += v
            positives[name] += bool(kind)
            ok = fp == 0 and miss == 0
            if verbose or not ok:
                table.add_row(name, phrase, f"{kind} {day}" if kind else "none", got, "yes" if ok else "NO")
    Console().print(table)

    targets = Targets("follow-up detection targets")
    for name, (tp, fp, miss) in totals.items():
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + miss) if tp + miss else 1.0
        n = len(CASES) if name == "general" else len(HELD_OUT)
        print(
            f"{name}: {n} phrases ({positives[name]} loops), precision {precision:.1%} ({tp}/{tp + fp}), "
            f"recall {recall:.1%} ({tp}/{tp + miss})"
        )
        if name == "general":
            targets.check("precision (general)", round(precision, 3), ">=", TARGET_PRECISION)
            targets.check("recall (general)", round(recall, 3), ">=", TARGET_RECALL)
    return targets.report()


if __name__ == "__main__":
    raise SystemExit(main())
