"""Long, multi-session conversations with known evidence, for the retrieval eval.

Each person talks on ~60 days over nine months. Most of what they say is everyday filler that
deliberately shares words and topics with the questions (their sister, dinner, work, moving),
so neither keyword overlap nor topical similarity alone finds the evidence. Planted among it:

- single facts, asked in other words ("What is my dog's breed?" for "we adopted a beagle");
- rare names (a project code name) that embeddings barely see;
- facts spread over several sessions (hobbies taken up months apart);
- when-questions and questions that name a time ("in March", "last week") over repeated events;
- facts that changed (a new job; a move: "where did I live before I moved to X?").

Deterministic for a seed; no model or network needed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

START = datetime(2023, 9, 1, 9, 0, tzinfo=UTC)
NOW = datetime(2024, 6, 12, 18, 0, tzinfo=UTC)  # "now" for every question

NAMES = ["ada", "bruno", "chiara", "dev", "elif", "farah", "goran", "hana", "ivo", "jun", "kemal", "lena"]
SISTERS = [
    "Marta",
    "Ines",
    "Noor",
    "Petra",
    "Salome",
    "Yara",
    "Greta",
    "Lucia",
    "Wanda",
    "Odile",
    "Rhea",
    "Tamsin",
]
DOGS = [("beagle", "Biscuit"), ("corgi", "Pickle"), ("greyhound", "Comet"), ("dachshund", "Noodle")]
CODENAMES = [
    "Zephyrine",
    "Quokkaflow",
    "Brambleton",
    "Halcyonix",
    "Tessaract",
    "Vervain",
    "Obsidian Lark",
    "Moraine",
]
ALLERGIES = ["cashews", "shellfish", "kiwi", "sesame", "penicillin", "bee stings"]
HOBBIES = [
    ("I signed up for a pottery class on Thursday evenings", "pottery"),
    ("Went bouldering at the climbing gym for the first time, my forearms are dead", "climbing"),
    ("Bought a second-hand cello and booked my first lesson", "cello"),
    ("Joined a Saturday morning birdwatching group by the lake", "birdwatching"),
    ("Started learning to knit, my first scarf is very lumpy", "knitting"),
    ("Got a sourdough starter going and baked my first loaf", "baking"),
]
RESTAURANTS = [
    "Trattoria Lupo",
    "Saigon Corner",
    "Casa Mariposa",
    "The Green Fig",
    "Bistro Anouk",
    "Kyoto Alley",
    "Tandoor House",
    "El Faro",
    "Noodle Bar Hoshi",
    "Meze & Co",
    "Bodega Sol",
    "Pho Bac",
]
DISHES = [
    "risotto",
    "pho",
    "tacos",
    "falafel",
    "duck confit",
    "ramen",
    "lamb curry",
    "paella",
    "gyoza",
    "moussaka",
]
CITIES = [
    "Lisbon",
    "Leeds",
    "Utrecht",
    "Graz",
    "Lyon",
    "Porto",
    "Malmo",
    "Ghent",
    "Bergen",
    "Turin",
    "Krakow",
    "Aarhus",
]
COMPANIES = [
    "Northwind",
    "Bluepeak",
    "Corvid Labs",
    "Ferrite",
    "Lumen Health",
    "Skylark Freight",
    "Tidewater",
    "Oakline",
]
JOBS = [
    "data analyst",
    "product designer",
    "backend developer",
    "project manager",
    "QA engineer",
    "UX researcher",
]
MEALS = [
    "a lentil soup",
    "chicken tikka",
    "mushroom risotto",
    "a veggie stir-fry",
    "shakshuka",
    "fish tacos",
    "spaghetti carbonara",
    "a big pot of chili",
    "baked salmon",
    "stuffed peppers",
    "pad thai",
    "gnocchi",
]

FILLER = [
    "Work was exhausting today, too many meetings",
    "My sister sent me a funny video of her cat",
    "I should call my sister this weekend",
    "Had leftovers for lunch again",
    "Thinking about what to cook for dinner",
    "It rained all day and I stayed in",
    "Went for a short run along the river",
    "Watched two episodes of that detective series",
    "Can you remind me to pay the electricity bill",
    "I'm so tired, slept badly last night",
    "The neighbours are renovating, the drilling never stops",
    "Tried a new coffee place near the office",
    "Work is calmer this week, finally",
    "I keep meaning to tidy the flat",
    "Ordered takeaway because I couldn't be bothered to cook",
    "Spent the evening reading on the balcony",
    "My back hurts from sitting all day at work",
    "Our team lunch was at some pizza place, nothing special",
    "I need new running shoes",
    "Thinking about a weekend trip somewhere",
    "The train was late again this morning",
    "I walked past a dog that looked exactly like a fox",
    "My friend might visit next month",
    "Cleaned the kitchen, it took forever",
    "I want to eat healthier this month",
    "Moving furniture around the living room, looks better now",
    "Had a long chat with my mum on the phone",
    "Bought groceries and forgot the milk",
    "Not much happened today, just a quiet day",
    "My manager asked me to lead the next sprint planning",
    "Went to the cinema, the film was too long",
    "Made a playlist for the gym",
    "I'm considering learning a new language",
    "The heating in the flat is broken again",
    "Met an old colleague for a drink after work",
    "Thinking about getting a plant for the bedroom",
]
FILLER_TAILS = [
    "",
    "",
    ".",
    "!",
    ", honestly.",
    " and that's about it.",
    ", nothing else new.",
    " haha",
    "...",
]


@dataclass
class GenTurn:
    message_id: str
    text: str
    ts: datetime


@dataclass
class Question:
    text: str
    kind: str  # single | rare | multi | when | time | changed
    evidence: list[str]  # message ids


@dataclass
class Conversation:
    person: str
    turns: list[GenTurn] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)


def filler_sentences(n: int, seed: int = 0) -> list[str]:
    """Everyday sentences (filler plus the planted kinds), for benches that need many texts."""
    rng = random.Random(seed)
    pool: list[str] = []
    while len(pool) < n:
        kind = rng.random()
        if kind < 0.6:
            pool.append(rng.choice(FILLER) + rng.choice(FILLER_TAILS))
        elif kind < 0.75:
            pool.append(f"Dinner at {rng.choice(RESTAURANTS)} tonight, the {rng.choice(DISHES)} was great")
        elif kind < 0.9:
            pool.append(f"Cooked {rng.choice(MEALS)} tonight")
        else:
            pool.append(rng.choice(HOBBIES)[0])
    return pool


def _sessions(rng: random.Random, count: int) -> list[datetime]:
    span = (NOW - timedelta(days=9) - START).days
    days = sorted(rng.sample(range(span), count))
    return [START + timedelta(days=d, hours=rng.randint(0, 11)) for d in days]


def conversation(index: int, seed: int = 0) -> Conversation:
    """One person's nine months of chat and the questions whose evidence is known."""
    rng = random.Random(seed * 1000 + index)
    person = NAMES[index % len(NAMES)] + ("" if index < len(NAMES) else str(index))
    conv = Conversation(person)
    days = _sessions(rng, 58)
    # the planted events, each on its own session day (index into days)
    planted: dict[int, list[tuple[str, str]]] = {}

    def plant(day: int, key: str, text: str) -> None:
        planted.setdefault(day, []).append((key, text))

    sister = SISTERS[index % len(SISTERS)]
    breed, dog = DOGS[index % len(DOGS)]
    code = CODENAMES[index % len(CODENAMES)]
    allergy = ALLERGIES[index % len(ALLERGIES)]
    city_a, city_b = CITIES[index % len(CITIES)], CITIES[(index + 5) % len(CITIES)]
    job_a, job_b = COMPANIES[index % len(COMPANIES)], COMPANIES[(index + 3) % len(COMPANIES)]
    role = JOBS[index % len(JOBS)]
    hobbies = rng.sample(HOBBIES, 3)

    plant(2, "sister", f"{sister} just turned thirty, we had cake at my parents' place")
    plant(4, "city_a", f"Our flat in {city_a} has such a tiny kitchen, I can barely turn around")
    plant(6, "job_a", f"First week as a {role} at {job_a} went fine, people are nice")
    plant(9, "dog", f"We adopted a {breed} puppy from the shelter and named him {dog}")
    plant(12, "hobby0", hobbies[0][0])
    plant(15, "allergy", f"Turns out I'm allergic to {allergy}, the allergist confirmed it")
    plant(20, "code", f"The {code} rollout got pushed again, now it is due at the end of the quarter")
    plant(24, "hobby1", hobbies[1][0])
    plant(27, "halfmarathon", "Ran my first half marathon this morning in 2:04, legs are jelly")
    plant(30, "moved", f"Finally moved into the new place in {city_b}, boxes everywhere")
    plant(38, "hobby2", hobbies[2][0])
    plant(41, "job_b", f"Handed in my notice, and signed with {job_b} as a senior {role}")
    # repeated events, one per month: only the time tells them apart
    restaurant_days = list(range(1, 57, 5))  # ~every 5 sessions
    restaurants = rng.sample(RESTAURANTS, len(restaurant_days))
    for n, (day, name) in enumerate(zip(restaurant_days, restaurants, strict=True)):
        plant(day, f"restaurant{n}", f"Dinner at {name} tonight, the {rng.choice(DISHES)} was great")
    cook_days = list(range(3, 56, 4))
    for n, day in enumerate(cook_days):
        plant(day, f"cook{n}", f"Cooked {rng.choice(MEALS)} tonight")

    ids: dict[str, str] = {}
    mid = 0
    for d, day in enumerate(days):
        n_turns = rng.randint(5, 6)
        slots = planted.get(d, [])
        texts = [(None, rng.choice(FILLER) + rng.choice(FILLER_TAILS)) for _ in range(n_turns - len(slots))]
        for item in slots:
            texts.insert(rng.randint(0, len(texts)), item)
        for j, (key, text) in enumerate(texts):
            mid += 1
            message_id = f"{person}-{mid}"
            conv.turns.append(GenTurn(message_id, text, day + timedelta(minutes=3 * j)))
            if key:
                ids[key] = message_id
    # a cooking turn last week and one a month ago, for "last week" questions
    last_week = NOW - timedelta(days=NOW.weekday() + 4)
    for key, when, meal in (
        ("cook_lastweek", last_week, rng.choice(MEALS)),
        ("cook_old", NOW - timedelta(days=40), "a lasagne"),
    ):
        mid += 1
        conv.turns.append(GenTurn(f"{person}-{mid}", f"Cooked {meal} tonight", when))
        ids[key] = f"{person}-{mid}"
    conv.turns.sort(key=lambda t: t.ts)

    def ts_of(key: str) -> datetime:
        return next(t.ts for t in conv.turns if t.message_id == ids[key])

    q = conv.questions
    q.append(Question("What's my sister called?", "single", [ids["sister"]]))
    q.append(Question("What breed is my dog?", "single", [ids["dog"]]))
    q.append(Question("Which food am I allergic to?", "single", [ids["allergy"]]))
    q.append(Question(f"When is {code} due?", "rare", [ids["code"]]))
    q.append(Question(f"How is {dog} doing?", "rare", [ids["dog"]]))
    q.append(
        Question("What hobbies have I taken up?", "multi", [ids["hobby0"], ids["hobby1"], ids["hobby2"]])
    )
    q.append(Question("When did I run my first half marathon?", "when", [ids["halfmarathon"]]))
    q.append(Question("When did I get the puppy?", "when", [ids["dog"]]))
    for n in rng.sample(range(len(restaurant_days)), 3):
        when = ts_of(f"restaurant{n}")
        others = [ts_of(f"restaurant{m}").month for m in range(len(restaurant_days)) if m != n]
        if when.month in others:  # two dinners that month: the question would be ambiguous
            continue
        q.append(Question(f"Where did I have dinner in {when:%B}?", "time", [ids[f"restaurant{n}"]]))
    q.append(Question("What did I cook last week?", "time", [ids["cook_lastweek"]]))
    q.append(Question("Where do I work now?", "changed", [ids["job_b"]]))
    q.append(Question(f"Where did I live before I moved to {city_b}?", "changed", [ids["city_a"]]))
    return conv


def conversations(people: int = 12, seed: int = 0) -> list[Conversation]:
    return [conversation(i, seed) for i in range(people)]


if __name__ == "__main__":
    convs = conversations()
    print(
        f"{len(convs)} people, {sum(len(c.turns) for c in convs)} turns, {sum(len(c.questions) for c in convs)} questions"
    )
    for t in convs[0].turns[:12]:
        print(t.ts.date(), t.message_id, t.text)
    for qq in convs[0].questions:
        print(qq.kind, qq.text, qq.evidence)
