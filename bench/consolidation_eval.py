"""Consolidation eval: scripted conversations with planted memories, scored.

32+ scripted people (seeded, varied phrasings, some the rules are not written for, and
distractors: other people's facts, hypotheticals, one-off questions, chit-chat, group talk).
Their turns go into a real LanceDB store; consolidation runs every 4 turns as the chat
process would trigger it, then once more; then every person is re-consolidated from scratch
with the watermark wiped (a crashed task's re-run) to count duplicates.

Prints: precision/recall by kind, duplicates, contradictions resolved, implicit preferences,
recurring questions, constraints merged, scope leaks.

    python bench/consolidation_eval.py [--people 32] [--seed 7]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.targets import Targets  # noqa: E402
from core.memory.consolidate import Consolidator, slot_of  # noqa: E402
from core.memory.embed import default_embedder  # noqa: E402
from core.memory.records import PRIVATE, Person, Turn, chat_scope  # noqa: E402
from core.memory.store import Store  # noqa: E402
from core.messages import utcnow  # noqa: E402

NAMES = [
    "Dana",
    "Omar",
    "Li",
    "Zoe",
    "Raj",
    "Ana",
    "Kim",
    "Eve",
    "Max",
    "Ivy",
    "Jon",
    "Noor",
    "Ugo",
    "Sara",
    "Tom",
    "Mia",
    "Ken",
    "Lea",
    "Bo",
    "Ida",
]
CITIES = [
    "Berlin",
    "Lisbon",
    "Porto",
    "Oslo",
    "Madrid",
    "Toronto",
    "Nairobi",
    "Kyoto",
    "Austin",
    "Lyon",
    "Krakow",
    "Dublin",
]
EMPLOYERS = ["Acme", "Initech", "Globex", "Umbrella Health", "Stark Labs", "Hooli", "Vandelay"]
JOBS = ["nurse", "designer", "data engineer", "teacher", "architect", "pharmacist", "developer"]
LIKES = [
    "hiking",
    "jazz",
    "board games",
    "sourdough baking",
    "cycling",
    "sci-fi novels",
    "chess",
    "gardening",
    "climbing",
    "photography",
]
DISLIKES = ["cilantro", "crowded bars", "horror movies", "early meetings", "olives"]
PROJECTS = [
    ("a budget app", "Ledger"),
    ("a garden planner", "Sprout"),
    ("a kids' book", "Moonboat"),
    ("a home lab", "Homelab"),
    ("a thesis on soil", "Loam"),
]
CONSTRAINTS = [
    "It needs to run offline.",
    "It must be done by June.",
    "The deadline is Friday.",
    "It has to work on old phones.",
    "It can't use any paid services.",
]
QUESTIONS = [
    [
        "How do I learn Rust?",
        "What's the best way to learn Rust?",
        "Any tips for learning Rust quickly?",
        "how should I start with Rust?",
    ],
    [
        "How do I make sourdough starter?",
        "What's the trick to a good sourdough starter?",
        "My sourdough starter keeps dying, how do I keep it alive?",
        "how to feed a sourdough starter?",
    ],
    [
        "How can I sleep better?",
        "Any tips to fall asleep faster?",
        "Why do I keep waking up at night?",
        "what helps with insomnia?",
    ],
    [
        "How do I negotiate a raise?",
        "What should I say when asking for a raise?",
        "How to ask my boss for more money?",
        "tips for salary negotiation?",
    ],
]
BREVITY = [
    "shorter please",
    "That was way too long.",
    "tl;dr?",
    "Can you keep it brief?",
    "Just the answer, please.",
    "Too wordy, make it shorter.",
]
FILLER = [
    "Thanks!",
    "Good morning.",
    "ok cool",
    "Haha, nice.",
    "What's the capital of Peru?",
    "Tell me a joke.",
    "What time zone is Tokyo in?",
    "Hmm, interesting.",
    "How are you today?",
]
DISTRACTORS = [
    "My sister lives in {c}.",
    "If I lived in {c} I'd be happier.",
    "I'm thinking about moving to {c}.",
    "My boss works at {e} too.",
    "Should I move to {c}?",
    "My friend loves {l}.",
]

HOME = [
    "I live in {c}.",
    "I'm based in {c} these days.",
    "I currently live in {c} with my partner.",
    "Home for me is {c}.",
    "i live in {cl}",
    "Been living in {c} for a while.",
]
MOVE = [
    "I moved to {c} last month.",
    "I've just relocated to {c}.",
    "I now live in {c}.",
    "We finally moved to {c}!",
    "Big news: I moved to {c}.",
]
WORK = [
    "I work at {e}.",
    "I'm working for {e} now.",
    "I joined {e} in March.",
    "I work for {e} as a {j}.",
    "{e} pays my bills these days.",
]
JOB = ["I'm a {j}.", "I work as a {j}.", "My job is {j}.", "I'm a {j} by training."]
LIKE = ["I love {x}.", "I really enjoy {x}.", "I'm a big fan of {x}.", "{X} is my favourite thing."]
DISLIKE = ["I can't stand {x}.", "I don't like {x}.", "I hate {x}."]
NAME = ["My name is {n}.", "Call me {n}.", "My name's {n}."]
PROJECT = ["I'm working on {d} called {n}.", "I'm building {d} called {n}.", "My side project is {n}."]


@dataclass
class Plan:
    person: str
    turns: list[tuple[str, str]] = field(default_factory=list)  # (scope, text)
    expected: set[tuple[str, str, str]] = field(default_factory=set)  # (scope, slot, value)
    superseded: list[tuple[str, str, str]] = field(default_factory=list)
    question: int = 0
    brevity: bool = False
    constraint: str = ""


def script(i: int, rng: random.Random) -> Plan:
    p = Plan(f"p{i:02d}")
    said: list[tuple[str, str]] = []

    def add(text: str, scope: str = PRIVATE) -> None:
        said.append((scope, text))

    name = rng.choice(NAMES)
    if rng.random() < 0.6:
        t = rng.choice(NAME)
        add(t.format(n=name))
        p.expected.add((PRIVATE, "name", name.lower()))
    home = rng.choice(CITIES)
    t = rng.choice(HOME)
    add(t.format(c=home, cl=home.lower()))
    p.expected.add((PRIVATE, "home", home.lower()))
    emp, job = rng.choice(EMPLOYERS), rng.choice(JOBS)
    t = rng.choice(WORK)
    add(t.format(e=emp, j=job))
    p.expected.add((PRIVATE, "employer", emp.lower()))
    if "{j}" in t:
        p.expected.add((PRIVATE, "job", job))
    elif rng.random() < 0.6:
        add(rng.choice(JOB).format(j=job))
        p.expected.add((PRIVATE, "job", job))
    for x in rng.sample(LIKES, 2):
        add(rng.choice(LIKE).format(x=x, X=x.capitalize()))
        p.expected.add((PRIVATE, f"taste:{x}", "likes"))
    if rng.random() < 0.5:
        x = rng.choice(DISLIKES)
        add(rng.choice(DISLIKE).format(x=x))
        p.expected.add((PRIVATE, f"taste:{x}", "dislikes"))
    if rng.random() < 0.3:
        add("I'm vegetarian.")
        p.expected.add((PRIVATE, "diet", "vegetarian"))
    if rng.random() < 0.7:
        desc, pname = rng.choice(PROJECTS)
        add(rng.choice(PROJECT).format(d=desc, n=pname))
        p.expected.add((PRIVATE, f"project:{pname.lower()}", pname.lower()))
        p.constraint = rng.choice(CONSTRAINTS)
        add(p.constraint)
    body: list[tuple[str, str]] = []
    if rng.random() < 0.5:
        family = rng.choice(QUESTIONS)
        for q in rng.sample(family, 3):
            body.append((PRIVATE, q))
        p.question = 3
    if rng.random() < 0.4:
        for b in rng.sample(BREVITY, rng.choice([2, 3])):
            body.append((PRIVATE, b))
        p.brevity = True
        p.expected.add((PRIVATE, "style:length", "concise"))
    for filler in rng.sample(FILLER, rng.randint(4, 8)):
        body.append((PRIVATE, filler))
    for _ in range(rng.randint(1, 3)):
        d = rng.choice(DISTRACTORS)
        body.append((PRIVATE, d.format(c=rng.choice(CITIES), e=rng.choice(EMPLOYERS), l=rng.choice(LIKES))))
    if rng.random() < 0.3:
        group = chat_scope("telegram", f"team-{i}")
        other = rng.choice([e for e in EMPLOYERS if e != emp])
        body.append((group, f"I work at {other}."))
        body.append((group, "Haha, nice."))
        p.expected.add((group, "employer", other.lower()))
    rng.shuffle(body)
    said += body
    if rng.random() < 0.5:
        new = rng.choice([c for c in CITIES if c != home])
        said.insert(len(said) - rng.randint(0, 3), (PRIVATE, rng.choice(MOVE).format(c=new)))
        p.expected.discard((PRIVATE, "home", home.lower()))
        p.expected.add((PRIVATE, "home", new.lower()))
        p.superseded.append((PRIVATE, "home", home.lower()))
    p.turns = said
    return p


def run(people: int, seed: int) -> Targets:
    import torch

    torch.set_num_threads(1)  # as in a worker process (workers/worker.py)
    rng = random.Random(seed)
    plans = [script(i, rng) for i in range(people)]
    store = Store(Path(tempfile.mkdtemp(prefix="consolidation-eval-")) / "db", default_embedder())
    consolidator = Consolidator(store)
    base = utcnow() - timedelta(days=30)
    start = time.perf_counter()
    runs = 0
    n_turns = 0
    for plan in plans:
        store.save_person(Person(plan.person, plan.person))
        for k, (scope, text) in enumerate(plan.turns):
            chat = plan.person if scope == PRIVATE else scope.split(":")[2]
            turn = Turn(
                plan.person,
                "console" if scope == PRIVATE else "telegram",
                chat,
                f"m{k}",
                "user",
                text,
                visibility=scope,
                ts=base + timedelta(minutes=10 * k),
            )
            store.add_turns([turn])
            n_turns += 1
            if (k + 1) % 4 == 0:
                consolidator.run(plan.person)
                runs += 1
        consolidator.run(plan.person)
        runs += 1
    elapsed = time.perf_counter() - start

    # crash re-run: wipe the watermark, consolidate everything again
    rerun_writes = 0
    for plan in plans:
        person = store.refresh_person(plan.person)
        person.settings.memory_state = {}
        store.save_person(person)
        result = consolidator.run(plan.person)
        rerun_writes += sum(1 for d in result.decisions if d.op != "NOOP")

    by_kind_tp: Counter[str] = Counter()
    by_kind_found: Counter[str] = Counter()
    by_kind_planted: Counter[str] = Counter()
    duplicates = leaks = 0
    contradictions = resolved = 0
    implicit_planted = implicit_found = implicit_false = 0
    questions_planted = questions_found = questions_false = 0
    constraints_planted = constraints_merged = 0
    misses: list[str] = []
    wrong: list[str] = []
    for plan in plans:
        memories = store.memories_of(plan.person, current_only=False)
        current = [m for m in memories if m.current]
        slots = defaultdict(list)
        for m in current:
            slot, value = slot_of(m)
            slots[(m.visibility, slot or m.kind + ":" + value)].append(m)
        duplicates += sum(len(v) - 1 for v in slots.values())
        for m in current:
            if m.visibility == PRIVATE and any(
                t.visibility != PRIVATE for t in store.turns_by_ids(m.source_turn_ids)
            ):
                leaks += 1
        for scope, slot, value in plan.expected:
            kind = (
                "project"
                if slot.startswith("project:")
                else ("preference" if slot.startswith(("taste:", "style:", "diet")) else "fact")
            )
            by_kind_planted[kind] += 1
            hit = [m for m in slots.get((scope, slot), []) if slot_of(m)[1] == value]
            if hit:
                by_kind_tp[kind] += 1
            else:
                misses.append(f"{plan.person} {slot}={value}")
        for m in current:
            kind = m.kind
            by_kind_found[kind] += 1
            slot, value = slot_of(m)
            if kind == "question":
                continue
            if (m.visibility, slot, value) not in plan.expected:
                wrong.append(f"{plan.person} {m.text!r}")
        qs = [m for m in current if m.kind == "question"]
        questions_planted += 1 if plan.question else 0
        good_q = [m for m in qs if len(m.source_turn_ids) >= 3]
        if plan.question and len(good_q) == 1:
            questions_found += 1
            by_kind_tp["question"] += 1
        questions_false += max(0, len(qs) - (1 if plan.question else 0))
        if plan.question:
            by_kind_planted["question"] += 1
        concise = [m for m in current if slot_of(m) == ("style:length", "concise")]
        implicit_planted += plan.brevity
        implicit_found += bool(plan.brevity and concise)
        implicit_false += bool(concise and not plan.brevity)
        for scope, slot, value in plan.superseded:
            contradictions += 1
            old = [m for m in memories if not m.current and slot_of(m) == (slot, value) and m.valid_to]
            new_ok = (
                any(slot == s and sc == scope for sc, s, _ in plan.expected)
                and len([m for m in current if slot_of(m)[0] == slot and m.visibility == scope]) == 1
            )
            resolved += bool(old and new_ok)
        if plan.constraint:
            constraints_planted += 1
            projects = [m for m in current if m.kind == "project"]
            merged = any("(" in m.text for m in projects)
            constraints_merged += merged

    print(
        f"\nConsolidation eval: {people} scripted people, {n_turns} turns, seed {seed}, "
        f"rule extractor, {runs} consolidation runs in {elapsed:.1f}s\n"
    )
    print(f"{'kind':<12}{'planted':>9}{'found':>8}{'correct':>9}{'precision':>11}{'recall':>8}")
    total_p = total_f = total_tp = 0
    for kind in ("fact", "preference", "project", "question"):
        planted, found, tp = by_kind_planted[kind], by_kind_found[kind], by_kind_tp[kind]
        total_p, total_f, total_tp = total_p + planted, total_f + found, total_tp + tp
        prec = tp / found if found else 1.0
        rec = tp / planted if planted else 1.0
        print(f"{kind:<12}{planted:>9}{found:>8}{tp:>9}{prec:>11.2f}{rec:>8.2f}")
    print(
        f"{'all':<12}{total_p:>9}{total_f:>8}{total_tp:>9}{total_tp / total_f:>11.2f}{total_tp / total_p:>8.2f}"
    )
    print()
    rows = [
        ("duplicate current memories (target 0)", duplicates),
        ("writes when re-run from scratch (target 0)", rerun_writes),
        ("contradictions resolved", f"{resolved}/{contradictions}"),
        ("implicit 'prefers concise' found", f"{implicit_found}/{implicit_planted}"),
        ("implicit 'prefers concise' without evidence", implicit_false),
        ("recurring questions found (one memory, 3 sources)", f"{questions_found}/{questions_planted}"),
        ("question memories not planted", questions_false),
        ("project constraints merged", f"{constraints_merged}/{constraints_planted}"),
        ("private memories with group evidence (target 0)", leaks),
    ]
    for label, value in rows:
        print(f"{label:<52}{value!s:>10}")
    if misses:
        print("\nmissed (first 12):", "; ".join(misses[:12]))
    if wrong:
        print("not planted (first 12):", "; ".join(wrong[:12]))
    targets = Targets("consolidation_eval targets")
    targets.check("duplicate current memories", duplicates, "==", 0)
    targets.check("writes when re-run from scratch", rerun_writes, "==", 0)
    targets.check("private memories with group evidence", leaks, "==", 0)
    targets.check("contradictions resolved, share", round(resolved / max(1, contradictions), 2), "==", 1)
    return targets


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=32)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    run(args.people, args.seed).exit()
