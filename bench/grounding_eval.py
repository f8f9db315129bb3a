"""How well core/grounding.py matches a question about the person to what they said, alone.

No model replies: each case is a person's own statements (as recall hands them to `ground`) and
one question, either about something they said (the reply must open with that statement) or
about something they never said (it must say "you haven't told me"). Seconds, not minutes, so
the relevance threshold is chosen here, with a table of threshold vs accuracy vs invented.

Slices: `dev` (DEV below: other kinds, values and phrasings than bench/reply_quality.py's, for
developing the matcher), `tuning`, `held-out` and `fresh held-out` (the people of
bench/reply_quality.py, their first-session messages as recall holds them). The held-out slices
are for checking at the end, never for choosing; `last held-out` (LAST) was written after the
first check of the fresh slice, to be scored once at the very end.

`python -m bench.grounding_eval [--slices dev tuning] [--thresholds 0.30 0.36 0.42] [--misses]`
"""

from __future__ import annotations

import argparse
import itertools
import random
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from bench.reply_quality import FRESH_PART, HELD, TUNING, key_word, people

# kind: (statements, questions, values); {0} is the value
DEV: dict[str, tuple[list[str], list[str], list[str]]] = {
    "job": (
        ["I work as a {0}.", "I'm a {0}.", "I've been a {0} for ten years."],
        [
            "What is my job?",
            "What do I work as?",
            "What's my profession?",
            "What do I do for work?",
            "What's my occupation?",
        ],
        ["teacher", "chef"],
    ),
    "city": (
        ["I live in {0}.", "I'm living in {0} now.", "I'm based in {0}."],
        ["Where do I live?", "What town do I live in?", "Which city is home for me?", "What's my city?"],
        ["Bergen", "Cusco"],
    ),
    "cat": (
        ["I have a cat called {0}.", "My cat is named {0}."],
        [
            "What's the name of my cat?",
            "What is my cat named?",
            "Do you remember my cat's name?",
            "What do I call my cat?",
        ],
        ["Whiskers", "Olive"],
    ),
    "dog": (
        ["My dog is called {0}.", "I've got a dog named {0}."],
        ["What's my dog's name?", "What is my dog called?"],
        ["Rufus", "Mochi"],
    ),
    "training": (
        ["I'm training for the {0}.", "I'm preparing for the {0}.", "I'm getting ready for the {0}."],
        [
            "What am I training for?",
            "What race am I doing?",
            "What competition am I training for?",
            "What am I getting in shape for?",
            "What event am I working towards?",
        ],
        ["Rome marathon", "Swiss triathlon"],
    ),
    "allergy": (
        ["I'm allergic to {0}.", "I have an allergy to {0}.", "Eating {0} makes me ill."],
        ["What am I allergic to?", "What allergies do I have?", "What gives me an allergic reaction?"],
        ["eggs", "soy"],
    ),
    "brother": (
        ["My brother's name is {0}.", "I have a brother called {0}."],
        [
            "What is my brother's name?",
            "Who is my brother?",
            "What's my brother called?",
            "What's my brother's first name?",
        ],
        ["Anders", "Kofi"],
    ),
    "language": (
        ["I'm learning {0} this year.", "I'm studying {0}."],
        [
            "Which language am I learning?",
            "What language am I taking lessons in?",
            "What language am I working on?",
            "Which foreign language am I picking up?",
        ],
        ["Dutch", "Hindi"],
    ),
    "instrument": (
        ["I play the {0} in a band.", "I play {0} in an orchestra."],
        ["What instrument do I play?", "What do I play in the orchestra?", "What instrument am I into?"],
        ["viola", "drums"],
    ),
    "car": (
        ["I drive a {0}.", "My car is a {0}."],
        [
            "What car do I drive?",
            "What do I drive?",
            "What's my car?",
            "What kind of vehicle do I own?",
            "What make is my car?",
        ],
        ["Honda", "Kia"],
    ),
    "birthday": (
        ["My birthday is in {0}.", "I was born in {0}."],
        [
            "When is my birthday?",
            "In which month is my birthday?",
            "When was I born?",
            "What month is my birthday in?",
            "When do I celebrate my birthday?",
        ],
        ["May", "June"],
    ),
    "food": (
        ["My favourite food is {0}.", "I love eating {0}."],
        [
            "What is my favourite food?",
            "What do I like to eat most?",
            "What dish do I like best?",
            "What's my favorite meal?",
        ],
        ["sushi", "lasagne"],
    ),
    "partner": (
        ["My wife is called {0}.", "I'm married to {0}."],
        ["What's my wife's name?", "Who am I married to?", "Who is my wife?", "What is my spouse called?"],
        ["Helen", "Rosa"],
    ),
    "hometown": (
        ["I grew up in {0}.", "I'm originally from {0}."],
        ["Where did I grow up?", "Where am I from?", "What's my hometown?"],
        ["Cork", "Ghent"],
    ),
}
# A last held-out set for the matcher alone, written after the first look at the fresh held-out
# slice's score and before reading its misses: nothing is chosen on it; kind: (statement,
# question, values); {0} is the value, and every person also tells their name (NAMED below)
LAST: dict[str, tuple[str, str, list[str]]] = {
    "job": ("I've worked as a {0} since college.", "What is it I do for work?", ["paramedic", "welder"]),
    "city": ("These days I live in {0}.", "Which place do I call home?", ["Tallinn", "Oaxaca"]),
    "pet": ("We adopted a rabbit and I called her {0}.", "What's my rabbit called?", ["Clover", "Dumpling"]),
    "goal": (
        "I've signed up for the {0}.",
        "What have I signed up for?",
        ["Vienna marathon", "Alpine triathlon"],
    ),
    "allergy": ("I can't eat {0}, I'm allergic.", "What food am I allergic to?", ["cashews", "prawns"]),
    "friend": ("My best friend is {0}.", "Who's my best friend?", ["Magnus", "Ayesha"]),
    "language": ("I take {0} classes on Tuesdays.", "What classes do I take?", ["Mandarin", "Italian"]),
    "hobby": ("I spend my weekends {0}.", "What do I do on weekends?", ["bouldering", "gardening"]),
    "car": ("I've just bought a {0}.", "What car did I buy?", ["Citroen", "Toyota"]),
    "age": ("I turned {0} last month.", "How old am I now?", ["thirty-four", "fifty-one"]),
}
NAMED = ["Hi, I'm {0}.", "My name's {0}, by the way.", "Hey, {0} here."]
LAST_NAMES = ["Ragnhild", "Obinna", "Perpetua", "Lorcan", "Shirin", "Tadeusz",
              "Mireille", "Kaveh", "Ondine", "Zbigniew", "Akosua", "Ferdinand"]  # fmt: skip
LAST_NAME_QUESTIONS = ("What's my name again?", "Do you remember who I am?")


def last_cases(seed: int = 99) -> list[Case]:
    """Twelve people of LAST, each asked about one thing they told, their name, and one thing
    they never told."""
    rng = random.Random(seed)
    out = []
    for j, name in enumerate(LAST_NAMES):
        kinds = rng.sample(sorted(LAST), 4)
        told, never = kinds[:3], kinds[3]
        values = {k: rng.choice(LAST[k][2]) for k in told}
        said = [LAST[k][0].format(values[k]) for k in told]
        turns = [f"{NAMED[j % 3].format(name)} {said[0]}", f"{said[1]} {said[2]} {rng.choice(CHATTER)}"]
        asked = told[j % 3]
        out.append(Case("last held-out", turns, LAST[asked][1], key_word(values[asked])))
        out.append(Case("last held-out", turns, LAST_NAME_QUESTIONS[j % 2], name.lower()))
        out.append(Case("last held-out", turns, LAST[never][1], ""))
    return out


# asked about one, told the other: either answer is fair, so no never-said case pairs them
RELATED = [{"city", "hometown"}]
DEV_NAMES = ["Aleksi", "Bronwyn", "Cosmin", "Dilnoza", "Eamon", "Farida"]
CHATTER = ["The weather was lovely today.", "Can you suggest a good book?", "I had a long day, honestly."]


@dataclass
class Case:
    slice: str
    turns: list[str]  # the person's own messages, as recall holds them
    question: str
    expected: str  # a word of the right statement; "" for a never-said question


def dev_cases(seed: int = 3) -> list[Case]:
    """Every question phrasing of every kind, asked of a person who told three other things (and
    their name) in any of the statement phrasings, plus never-said questions."""
    rng = random.Random(seed)
    out = []
    kinds = sorted(DEV)
    for n, (kind, question) in enumerate((k, q) for k in kinds for q in DEV[k][1]):
        for told_it in (True, False):
            others = [k for k in kinds if k != kind and not any({k, kind} <= r for r in RELATED)]
            told = rng.sample(others, 2) + ([kind] if told_it else [rng.choice(others)])
            told = list(dict.fromkeys(told))
            rng.shuffle(told)
            name = DEV_NAMES[n % len(DEV_NAMES)]
            values = {k: rng.choice(DEV[k][2]) for k in told}
            said = [rng.choice(DEV[k][0]).format(values[k]) for k in told]
            turns = [f"Hi, I'm {name}. {said[0]}", " ".join(said[1:]) + " " + rng.choice(CHATTER)]
            expected = key_word(values[kind]) if told_it else ""
            out.append(Case("dev", turns, question, expected))
    for n, question in enumerate(("What's my name?", "Do you remember my name?", "Who am I?")):
        kind = kinds[n]
        said = DEV[kind][0][0].format(DEV[kind][2][0])
        out.append(Case("dev", [f"Hello, I'm {DEV_NAMES[n]}. {said}"], question, DEV_NAMES[n].lower()))
    return out


def bench_cases(slices: set[str]) -> list[Case]:
    """The fact and never-said questions of bench/reply_quality.py's people."""
    out = []
    for p in people():
        if p.part not in slices:
            continue
        turns = [a.text for a in p.session1]
        for ask in p.session2:
            if ask.kind in ("fact", "never"):
                out.append(Case(p.part, turns, ask.text, ask.expected if ask.kind == "fact" else ""))
    return out


def run(
    cases: list[Case], thresholds: list[float], misses: bool
) -> list[tuple[str, float, float, float, int]]:
    from core.grounding import ground
    from core.memory.embed import default_embedder
    from core.memory.recall import Recalled

    embedder = default_embedder()
    cache: dict[str, list[float]] = {}

    def embed(texts: list[str]) -> list[list[float]]:
        todo = [t for t in texts if t not in cache]
        if todo:
            for t, v in zip(todo, embedder.embed(todo), strict=True):
                cache[t] = v.tolist()
        return [cache[t] for t in texts]

    ts = datetime(2026, 10, 5, tzinfo=UTC)
    rows = []
    shown: set[tuple[str, str]] = set()
    for part, t in itertools.product(sorted({c.slice for c in cases}), thresholds):
        mine = [c for c in cases if c.slice == part]
        right = facts = invented = never = 0
        for c in mine:
            recalled = [Recalled(text=x, kind="turn", score=1.0, ts=ts) for x in c.turns]
            g = ground(c.question, recalled, embed, threshold=t)
            if c.expected:
                facts += 1
                ok = g is not None and g.known and c.expected in g.opening.lower()
                right += ok
            else:
                never += 1
                ok = g is not None and not g.known
                invented += not ok
            if misses and not ok and (part, c.question + str(c.turns)) not in shown:
                shown.add((part, c.question + str(c.turns)))
                got = "not a question about the person" if g is None else f"{g.score:.2f} {g.opening}"
                print(f"[{part} t={t}] {c.question!r} -> {got}   (told: {' | '.join(c.turns)})")
        rows.append((part, t, right / max(1, facts), invented / max(1, never), len(mine)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--slices",
        nargs="+",
        default=["dev", TUNING],
        choices=("dev", TUNING, HELD, FRESH_PART, "last held-out"),
    )
    parser.add_argument("--thresholds", type=float, nargs="+")
    parser.add_argument("--misses", action="store_true", help="print every wrong answer")
    args = parser.parse_args()
    from core.grounding import RELEVANCE

    cases = (dev_cases() if "dev" in args.slices else []) + bench_cases(set(args.slices))
    cases += last_cases() if "last held-out" in args.slices else []
    rows = run(cases, args.thresholds or [RELEVANCE], args.misses)
    table = Table(title=f"Question matcher (core/grounding.py), default threshold {RELEVANCE}")
    for col in ("slice", "threshold", "questions", "fact accuracy", "never-said invented"):
        table.add_column(col, justify="left" if col == "slice" else "right")
    for part, t, acc, inv, n in rows:
        table.add_row(part, f"{t:.2f}", str(n), f"{acc:.2f}", f"{inv:.2f}")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
