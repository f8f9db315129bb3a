"""Personal-recall cases: people tell facts over several sessions, then ask about one.

Deterministic (seeded), so every layout and every model is scored on the same cases.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

FACTS: list[tuple[str, str, list[str]]] = [
    (
        "I'm training for the {0}.",
        "What am I training for?",
        ["Berlin marathon", "Tokyo marathon", "Ironman triathlon", "London half marathon"],
    ),
    ("My dog is called {0}.", "What is my dog called?", ["Biscuit", "Pepper", "Mochi", "Rufus"]),
    ("I work as a {0}.", "What is my job?", ["nurse", "carpenter", "pharmacist", "pilot"]),
    ("I live in {0}.", "Which city do I live in?", ["Lisbon", "Montreal", "Nairobi", "Osaka"]),
    ("I'm allergic to {0}.", "What am I allergic to?", ["peanuts", "penicillin", "shellfish", "pollen"]),
    ("My sister's name is {0}.", "What is my sister's name?", ["Ingrid", "Priya", "Soledad", "Marta"]),
    (
        "I'm learning {0} this year.",
        "Which language am I learning?",
        ["Portuguese", "Japanese", "Swahili", "Korean"],
    ),
    ("I play the {0} in a band.", "Which instrument do I play?", ["cello", "trombone", "banjo", "saxophone"]),
    ("My favourite food is {0}.", "What is my favourite food?", ["ramen", "paella", "pierogi", "falafel"]),
    (
        "I'm building {0} at work.",
        "What am I building at work?",
        ["a billing service", "a weather app", "a chess engine", "a recipe website"],
    ),
    ("I drive a {0}.", "What car do I drive?", ["Volvo", "Subaru", "Tesla", "Fiat"]),
    ("My birthday is in {0}.", "In which month is my birthday?", ["March", "July", "October", "December"]),
]

CHATTER = [
    "The weather was lovely today.",
    "I had a long day, honestly.",
    "Can you suggest a good book?",
    "I made coffee this morning.",
    "Traffic was terrible on the way home.",
    "I watched a documentary about octopuses.",
]


@dataclass
class Session:
    day: datetime
    said: list[str] = field(default_factory=list)


@dataclass
class Case:
    person: str
    sessions: list[Session]
    question: str
    expected: str
    facts: list[tuple[str, str]] = field(default_factory=list)  # every (question, expected) told


def cases(n_people: int = 48, seed: int = 7) -> list[Case]:
    rng = random.Random(seed)
    start = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)
    out = []
    for i in range(n_people):
        kinds = rng.sample(range(len(FACTS)), 4)
        facts = [(FACTS[k][0].format(v := rng.choice(FACTS[k][2])), FACTS[k][1], v) for k in kinds]
        sessions = []
        for s, (statement, _, _) in enumerate(facts):
            said = rng.sample(CHATTER, 2)
            said.insert(rng.randrange(3), statement)
            sessions.append(Session(start + timedelta(days=7 * s + i % 5), said))
        _, question, expected = facts[i % 4]
        told = [(q, v) for _, q, v in facts]
        out.append(Case(f"eval-{i:03d}", sessions, question, expected, told))
    return out
