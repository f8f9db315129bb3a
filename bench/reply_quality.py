"""Reply-quality eval: replies a person wants to read, on the bundled model, default sampling.

Scripted people (44 by default) each tell their name and three facts over a first session, with
an ordinary request, then in a second session (a second Assistant on the same data dir, as a
second process would be; half of them in the same chat, half in a new one) make another ordinary
request (advice, explain, rewrite, a short poem), ask about two things they told and about one
they never said. Everybody talks at once, so the engine batches them (minutes, not an hour).

Columns: fact accuracy (the answer is in the reply); never-said questions answered "don't know"
vs invented; degenerate share (a repeated 4-gram rate over 0.25, a sentence said 3+ times, or the
reply ran to the cap); identity slips (the reply claims the person's name or facts as its own);
wrong name (the reply greets the person, or names itself, by a name that is neither theirs nor
Confidante); other language (the reply left English); requests on task (the reply to a request
talks about what was asked, a word of its topic: ON_TASK); words per reply (median, all and
one-sentence questions); time to first token and to the full reply, measured one request at a
time on the same one-sentence questions.

The last 12 of those people are a held-out slice (their own names, values, requests and question
phrasings), and 12 more a second one (FRESH_KINDS: other phrasings of what they say, too), each
reported on its own: defaults and the question matcher were tuned on the others only. The anchor row runs
transformers' own `generate` on the same prompts with the model card's example settings.

`python -m bench.reply_quality [--people 44] [--fresh 12] [--only tuning] [--seeds 1 2 3] [--dump r.jsonl]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import random
import re
import statistics
import tempfile
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.targets import Targets

HELD_OUT = 12
ASKING: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar("asking")  # (pid, ask text)
CAP = 256  # today's default max_new_tokens

# kind: (statement, question (tuning), question (held-out), claims as the assistant's own,
#        values (tuning), values (held-out))
KINDS: dict[str, tuple[str, str, str, tuple[str, ...], list[str], list[str]]] = {
    "job": (
        "I work as a {0}.",
        "What do I do for a living?",
        "What's my job?",
        ("i work as a {0}", "i'm a {0}", "i am a {0}"),
        ["nurse", "carpenter", "pharmacist", "pilot", "librarian"],
        ["plumber", "dentist", "translator"],
    ),
    "city": (
        "I live in {0}.",
        "Which city do I live in?",
        "Where am I living these days?",
        ("i live in {0}",),
        ["Leeds", "Lisbon", "Montreal", "Nairobi", "Osaka"],
        ["Dublin", "Krakow", "Valparaiso"],
    ),
    "cat": (
        "I have a cat called {0}.",
        "What is my cat called?",
        "What's my cat's name?",
        ("i have a cat called {0}", "my cat is called {0}", "my cat, {0}", "my cat {0}"),
        ["Mango", "Pickle", "Nova", "Ziggy", "Marble"],
        ["Tofu", "Saffron", "Gizmo"],
    ),
    "training": (
        "I'm training for the {0}.",
        "What am I training for?",
        "Which race am I getting ready for?",
        ("i'm training for the {0}", "i am training for the {0}"),
        ["Berlin marathon", "Tokyo marathon", "Ironman triathlon", "London half marathon"],
        ["Boston marathon", "Paris 10k"],
    ),
    "allergy": (
        "I'm allergic to {0}.",
        "What am I allergic to?",
        "Which allergy do I have?",
        ("i'm allergic to {0}", "i am allergic to {0}"),
        ["peanuts", "penicillin", "shellfish", "pollen"],
        ["sesame", "latex"],
    ),
    "sister": (
        "My sister's name is {0}.",
        "What is my sister's name?",
        "What's my sister called?",
        ("my sister's name is {0}", "my sister is {0}", "my sister, {0}", "my sister {0}"),
        ["Ingrid", "Soledad", "Marta", "Keiko"],
        ["Beatriz", "Oona"],
    ),
    "language": (
        "I'm learning {0} this year.",
        "Which language am I learning?",
        "What language am I studying?",
        ("i'm learning {0}", "i am learning {0}"),
        ["Portuguese", "Japanese", "Swahili", "Korean"],
        ["Finnish", "Greek"],
    ),
    "instrument": (
        "I play the {0} in a band.",
        "Which instrument do I play?",
        "What do I play in my band?",
        ("i play the {0}",),
        ["cello", "trombone", "banjo", "saxophone"],
        ["accordion", "harp"],
    ),
    "car": (
        "I drive a {0}.",
        "What car do I drive?",
        "What kind of car do I have?",
        ("i drive a {0}",),
        ["Volvo", "Subaru", "Tesla", "Fiat"],
        ["Skoda", "Mazda"],
    ),
    "birthday": (
        "My birthday is in {0}.",
        "In which month is my birthday?",
        "When is my birthday?",
        ("my birthday is in {0}",),
        ["March", "July", "October", "December"],
        ["February", "August"],
    ),
}

# A second held-out slice, written before the question matcher of core/grounding.py was reworked
# and scored only at the end: other names, values, requests, and other phrasings of both what
# the person says and what they ask ("I'm a vet by trade" ... "What's my line of work?").
# kind: (statement, question, claims as the assistant's own, values)
FRESH_KINDS: dict[str, tuple[str, str, tuple[str, ...], list[str]]] = {
    "job": (
        "I'm an {0} by trade.",
        "What's my line of work?",
        ("i'm an {0}", "i am an {0}", "i work as an {0}"),
        ["electrician", "architect", "optician"],
    ),
    "city": (
        "I moved to {0} last year.",
        "What city am I based in?",
        ("i moved to {0}", "i live in {0}"),
        ["Tbilisi", "Halifax", "Porto"],
    ),
    "cat": (
        "My cat's name is {0}.",
        "What did I name my cat?",
        ("my cat's name is {0}", "my cat is called {0}", "my cat, {0}", "my cat {0}"),
        ["Juniper", "Pixel", "Biscuit"],
    ),
    "training": (
        "I'm training for the {0}.",
        "What event am I preparing for?",
        ("i'm training for the {0}", "i am training for the {0}"),
        ["Stockholm marathon", "Kilimanjaro climb"],
    ),
    "allergy": (
        "I'm allergic to {0}.",
        "Do you remember my allergy?",
        ("i'm allergic to {0}", "i am allergic to {0}"),
        ["walnuts", "mustard"],
    ),
    "sister": (
        "I have a sister called {0}.",
        "Who is my sister?",
        ("i have a sister called {0}", "my sister is {0}", "my sister, {0}", "my sister {0}"),
        ["Annika", "Rosalind"],
    ),
    "language": (
        "I've started learning {0}.",
        "Which language have I been practising?",
        ("i've started learning {0}", "i'm learning {0}", "i am learning {0}"),
        ["Icelandic", "Tagalog"],
    ),
    "instrument": (
        "I play the {0} in a band.",
        "What instrument do I practise?",
        ("i play the {0}",),
        ["clarinet", "ukulele"],
    ),
    "car": (
        "My car is a {0}.",
        "What am I driving these days?",
        ("my car is a {0}", "i drive a {0}"),
        ["Peugeot", "Hyundai"],
    ),
    "birthday": (
        "I was born in {0}.",
        "What month was I born in?",
        ("i was born in {0}",),
        ["November", "April"],
    ),
}
FRESH = 12
FRESH_NAMES = ["Wiremu", "Dagny", "Chidi", "Marguerite", "Henrik", "Yasmin", "Teodor", "Amaia",
               "Koa", "Ludmila", "Bastien", "Nilufar"]  # fmt: skip
FRESH_REQUESTS = [
    "Explain what inflation is.",
    "Write a short poem about rain.",
    "Rewrite this to sound more professional: 'hey can u fix this asap'",
    "How can I stop putting things off?",
    "Give me an idea for a cheap weekend trip.",
    "Explain how vaccines work.",
]
FRESH_NAME_QUESTIONS = ("What name do I go by?", "Do you know what I'm called?")
FRESH_GREETINGS = ("Hey, my name is {0}.", "Hello! I'm {0}.", "Hi there, I'm {0}.")

NAMES = ["Priya", "Tomasz", "Amara", "Lucas", "Mei", "Jonas", "Fatima", "Diego", "Hana", "Oskar",
         "Leila", "Mateo", "Sanna", "Kwame", "Elif", "Rafael", "Yuki", "Nadia", "Bruno", "Ines",
         "Arjun", "Clara", "Tariq", "Greta", "Omar", "Lena", "Pablo", "Zara", "Emil", "Noor",
         "Felix", "Aisha"]  # fmt: skip
HELD_OUT_NAMES = ["Ruairi", "Ximena", "Bogdan", "Thandiwe", "Anselm", "Ottilie", "Kenji", "Marisol",
                  "Vesna", "Idris", "Solveig", "Caetano"]  # fmt: skip

REQUESTS = [
    "Can you suggest a quick dinner for after a night shift?",
    "Explain what a VPN is in simple terms.",
    "Rewrite this to sound friendlier: 'Send me the report by Friday.'",
    "Write a short poem about the sea.",
    "How can I fall asleep faster?",
    "Explain why the sky is blue.",
    "Give me a tip for staying focused while working from home.",
    "Write a two-line poem about coffee.",
    "Rewrite this more politely: 'Your invoice is late again.'",
    "What's a good way to start running?",
]
HELD_OUT_REQUESTS = [
    "Any advice for a first job interview?",
    "Explain what compound interest is.",
    "Rewrite this to sound calmer: 'Stop changing the plan every day!'",
    "Write a short poem about autumn leaves.",
    "How do I keep basil alive on a windowsill?",
    "Explain how a rainbow forms.",
]
NAME_QUESTIONS = ("What's my name?", "Do you remember my name?")

DONT_KNOW = re.compile(
    r"\b(?:do not|don't|didn't|did not|haven't|have not|hasn't|can't|cannot|couldn't|wasn't|"
    r"not been|never)\s+(?:\w+\s+){0,2}(?:know|remember|recall|told|tell|mention|mentioned|said|say|"
    r"shared|share|sure|aware|have (?:that|any|this))\b"
    r"|\bnot sure\b|\bno idea\b|\bno information\b|\bno record\b|\bdon't have (?:that|any)\b"
    r"|\b(?:could|can|would) you (?:tell|share|let) me\b|\bwhat is it\?|\bwhat's it\?|\bi'd love to know\b",
    re.IGNORECASE,
)


@dataclass
class Ask:
    text: str
    kind: str  # request | tell | fact | never
    expected: str = ""  # fact: the word that must appear
    short: bool = False  # needs one sentence


TUNING, HELD, FRESH_PART = "tuning", "held-out", "fresh held-out"


@dataclass
class Scripted:
    pid: str
    name: str
    part: str  # TUNING, HELD or FRESH_PART
    same_chat: bool
    claims: list[str]
    session1: list[Ask]
    session2: list[Ask]


def key_word(value: str) -> str:
    return max(value.split(), key=len).lower()


def people(n: int = 44, seed: int = 15, fresh: int = FRESH) -> list[Scripted]:
    """`n` people (the last HELD_OUT of them held out), then `fresh` of the second held-out slice."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        held = i >= n - HELD_OUT
        names = HELD_OUT_NAMES if held else NAMES
        name = names[(i - (n - HELD_OUT)) % len(names)] if held else names[i % len(names)]
        kinds = rng.sample(sorted(KINDS), 4)
        told, never = kinds[:3], kinds[3]
        values = {k: rng.choice(KINDS[k][5] if held else KINDS[k][4]) for k in told}
        facts = [KINDS[k][0].format(values[k]) for k in told]
        claims = [f"i'm {name.lower()}", f"i am {name.lower()}", f"my name is {name.lower()}"]
        claims += [c.format(values[k]).lower() for k in told for c in KINDS[k][3]]
        requests = rng.sample(HELD_OUT_REQUESTS if held else REQUESTS, 2)
        q = 2 if held else 1
        session1 = [
            Ask(f"Hi, I'm {name}. {facts[0]} {facts[1]}", "tell"),
            Ask(f"{facts[2]} {requests[0]}", "request"),
        ]
        first = (
            Ask(NAME_QUESTIONS[q - 1], "fact", name.lower(), True)
            if i % 2
            else Ask(KINDS[told[0]][q], "fact", key_word(values[told[0]]), True)
        )
        session2 = [
            Ask(requests[1], "request"),
            first,
            Ask(KINDS[told[2]][q], "fact", key_word(values[told[2]]), True),
            Ask(KINDS[never][q], "never", "", True),
        ]
        out.append(
            Scripted(f"rq-{i:03d}", name, HELD if held else TUNING, i % 2 == 0, claims, session1, session2)
        )
    return out + fresh_people(fresh, n)


def fresh_people(n: int, first: int, seed: int = 1515) -> list[Scripted]:
    """The second held-out slice (FRESH_KINDS): its own rng, so it leaves the others as they were."""
    rng = random.Random(seed)
    out = []
    for j in range(n):
        i, name = first + j, FRESH_NAMES[j % len(FRESH_NAMES)]
        kinds = rng.sample(sorted(FRESH_KINDS), 4)
        told, never = kinds[:3], kinds[3]
        values = {k: rng.choice(FRESH_KINDS[k][3]) for k in told}
        facts = [FRESH_KINDS[k][0].format(values[k]) for k in told]
        claims = [f"i'm {name.lower()}", f"i am {name.lower()}", f"my name is {name.lower()}"]
        claims += [c.format(values[k]).lower() for k in told for c in FRESH_KINDS[k][2]]
        requests = rng.sample(FRESH_REQUESTS, 2)
        session1 = [
            Ask(f"{FRESH_GREETINGS[j % 3].format(name)} {facts[0]} {facts[1]}", "tell"),
            Ask(f"{facts[2]} {requests[0]}", "request"),
        ]
        first_fact = (
            Ask(FRESH_NAME_QUESTIONS[j // 2 % 2], "fact", name.lower(), True)
            if j % 2
            else Ask(FRESH_KINDS[told[0]][1], "fact", key_word(values[told[0]]), True)
        )
        session2 = [
            Ask(requests[1], "request"),
            first_fact,
            Ask(FRESH_KINDS[told[2]][1], "fact", key_word(values[told[2]]), True),
            Ask(FRESH_KINDS[never][1], "never", "", True),
        ]
        out.append(Scripted(f"rq-{i:03d}", name, FRESH_PART, j % 2 == 0, claims, session1, session2))
    return out


# --- scoring -------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def repeated_4gram_rate(text: str) -> float:
    w = words(text)
    grams = [tuple(w[i : i + 4]) for i in range(len(w) - 3)]
    return 0.0 if not grams else 1 - len(set(grams)) / len(grams)


def max_sentence_count(text: str) -> int:
    sentences = [" ".join(words(s)) for s in re.split(r"(?<=[.!?])\s+|\n+", text)]
    sentences = [s for s in sentences if len(s) >= 6]
    return max((sentences.count(s) for s in sentences), default=0)


# what a reply to each request must talk about to count as on task (a word of its topic)
ON_TASK: dict[str, str] = {
    "quick dinner": r"egg|omelet|pasta|rice|soup|salad|toast|noodle|sandwich|stir|wrap|beans|oats|bowl|meal",
    "VPN": r"network|private|encrypt|internet|connection|server|online",
    "report by Friday": r"report",
    "poem about the sea": r"sea|wave|ocean|tide|shore|salt",
    "fall asleep": r"sleep|bed|screen|caffeine|breath|relax|routine|dark",
    "sky is blue": r"scatter|light|wavelength|atmosphere|rayleigh|sun",
    "working from home": r"break|focus|workspace|desk|schedule|pomodoro|distract|task|routine",
    "poem about coffee": r"coffee|cup|brew|mug|bean|morning",
    "invoice": r"invoice",
    "start running": r"run|walk|jog|pace|shoe|minute|slow|distance",
    "job interview": r"interview|prepare|research|question|company|practi|confident",
    "compound interest": r"interest|principal|grow|earn|money|rate",
    "calmer": r"plan|change",
    "autumn leaves": r"leaf|leaves|autumn|fall|gold|red|tree",
    "basil": r"basil|water|sun|light|soil|pot|leaves",
    "rainbow": r"light|refract|rain|drop|sun|color|colour|spectrum",
    "inflation": r"price|money|cost|buy|value|economy",
    "about rain": r"rain|drop|cloud|storm|puddle|sky",
    "more professional": r"fix|resolve|address|look|issue|soon|possible",
    "putting things off": r"task|start|small|step|goal|procrastinat|deadline|timer|list",
    "weekend trip": r"trip|visit|park|camp|train|town|hike|beach|city|drive|museum",
    "vaccines": r"immune|virus|body|antibod|protect|germ|disease|infection",
}
_GREETS = r"hi|hello|hey|dear|welcome(?: back)?|thanks|thank you|good (?:morning|evening|afternoon)"
# a name the reply calls the person, or itself, by: "Zara, hello!", "Hi Kai,", "My name is Ela"
_CALLS = re.compile(
    rf"(?:^|[.!?]\s+)([A-Z][a-z]+),?\s+(?:{_GREETS})\b|\b(?i:{_GREETS}),?\s+([A-Z][a-z]+)\b"
    r"|\b(?i:my name is|i'm called|call me)\s+([A-Z][a-z]+)",
)


def wrong_name(reply: str, person: Scripted) -> bool:
    """The reply greets the person, or names itself, by a name that is neither theirs nor
    Confidante (the 135M model greets "Zara, hello!" or calls itself "Ela")."""
    for match in _CALLS.finditer(reply):
        name = next(g for g in match.groups() if g)
        if name not in (person.name, "Confidante") and name.lower() not in _NOT_NAMES:
            return True
    return False


# what stands where a name could ("Aw, hello there", "Bienvenue, welcome"): no name
_NOT_NAMES = {"there", "again", "back", "you", "friend", "mr", "mrs", "ms", "dr", "aw", "ah", "oh", "mmm",
              "hmm", "well", "wow", "yes", "sure", "okay", "ok", "hey", "hi", "hello", "hola", "bonjour",
              "bienvenue", "ciao", "everyone", "all", "dear", "welcome", "and", "so", "good"}  # fmt: skip
# another language than the person's English: a non-Latin script, or its everyday words
_FOREIGN = re.compile(
    r"[\u0370-\u03ff\u0400-\u04ff\u0590-\u06ff\u0900-\u0dff\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]"
)
_FOREIGN_WORDS = {"la", "el", "los", "las", "es", "est", "une", "les", "der", "die", "und", "que", "por",
                  "para", "mais", "pero", "con", "sont", "ist", "nicht", "muy", "très", "y", "et"}  # fmt: skip


def drifted(reply: str) -> bool:
    """The reply left English (a person who said "I'm learning Japanese" got Japanese)."""
    return bool(_FOREIGN.search(reply)) or sum(w in _FOREIGN_WORDS for w in words(reply)) >= 3


def on_task(ask: Ask, reply: str) -> bool:
    """A request's reply talks about what was asked (a word of its topic)."""
    topic = next((rx for key, rx in ON_TASK.items() if key.lower() in ask.text.lower()), None)
    return topic is None or re.search(topic, reply, re.IGNORECASE) is not None


def identity_slip(reply: str, person: Scripted) -> bool:
    text = reply.lower().replace("\u2019", "'")
    return any(re.search(r"(?<![\w'])" + re.escape(c) + r"(?![\w'])", text) for c in person.claims)


@dataclass
class Row:
    pid: str
    part: str
    ask: Ask
    reply: str
    tokens: int


@dataclass
class Scores:
    label: str
    rows: list[Row] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    full: list[float] = field(default_factory=list)

    def summary(self, cap: int, people_by_id: dict[str, Scripted], part: str | None = None) -> dict:
        rows = [r for r in self.rows if part is None or r.part == part]
        facts = [r for r in rows if r.ask.kind == "fact"]
        never = [r for r in rows if r.ask.kind == "never"]
        dont_know = [r for r in never if DONT_KNOW.search(r.reply)]

        def degenerate(r: Row) -> bool:
            return repeated_4gram_rate(r.reply) > 0.25 or max_sentence_count(r.reply) >= 3 or r.tokens >= cap

        short = [len(words(r.reply)) for r in rows if r.ask.short]
        requests = [r for r in rows if r.ask.kind == "request"]
        return {
            "on_task": sum(on_task(r.ask, r.reply) for r in requests) / max(1, len(requests)),
            "drift": sum(drifted(r.reply) for r in rows) / max(1, len(rows)),
            "wrong_name": sum(wrong_name(r.reply, people_by_id[r.pid]) for r in rows) / max(1, len(rows)),
            "replies": len(rows),
            "fact_accuracy": sum(r.ask.expected in r.reply.lower() for r in facts) / len(facts)
            if facts
            else None,
            "dont_know": len(dont_know) / len(never) if never else None,
            "invented": 1 - len(dont_know) / len(never) if never else None,
            "degenerate": sum(map(degenerate, rows)) / max(1, len(rows)),
            "at_cap": sum(r.tokens >= cap for r in rows) / max(1, len(rows)),
            "identity_slips": sum(identity_slip(r.reply, people_by_id[r.pid]) for r in rows),
            "words_median": statistics.median([len(words(r.reply)) for r in rows]) if rows else 0,
            "words_short_median": statistics.median(short) if short else 0,
            "ttft_median": statistics.median(self.ttft) if self.ttft and part is None else None,
            "full_median": statistics.median(self.full) if self.full and part is None else None,
        }


# --- running the assistant ---------------------------------------------------------------------


class SeededEngine:
    """The engine as the assistant sees it, giving each reply its own seed (its draws do not
    depend on the batch it lands in) and keeping the prompts for the anchor row. Runs still
    differ: a batch's size moves the logits' last bits, and sampling carries that on (two runs of
    the default, seeds 1 2, tuning slice: 249 of 384 replies alike, requests on task 0.80 / 0.76)."""

    def __init__(self, engine: Any, seed: int) -> None:
        self.engine, self.seed = engine, seed
        self.prompts: dict[tuple[str, str], list[dict[str, str]]] = {}  # (pid, ask) -> prompt
        self.accepts_prefix = getattr(engine, "accepts_prefix", False)
        self.profile = engine.profile

    @property
    def context_tokens(self) -> int:
        return self.engine.context_tokens

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    def forget_prefixes(self) -> None:
        self.engine.forget_prefixes()

    def stream(self, messages: list[dict[str, str]], **kwargs: Any) -> AsyncIterator[str]:
        asking = ASKING.get()
        seed = zlib.crc32(f"{self.seed}:{asking}".encode())
        return self.engine.stream(messages, seed=seed, **kwargs)


async def converse(
    assistant: Any, person: Scripted, asks: list[Ask], chat: str, day: datetime, session: int
) -> list[Row]:
    from core.messages import Incoming

    rows = []
    for j, ask in enumerate(asks):
        msg = Incoming(
            platform="console",
            chat_id=chat,
            sender_id=person.pid,
            sender_name=person.name,
            text=ask.text,
            message_id=f"{chat}-s{session}-{j}",
            ts=day + timedelta(minutes=j),
        )
        ASKING.set((person.pid, ask.text))
        reply = await assistant.handle(msg)
        text = await reply.collect() if reply else ""
        rows.append(Row(person.pid, person.part, ask, text, assistant.engine.count_tokens(text)))
    return rows


def open_store(data: Path, embedder: Any) -> Any:
    from core.memory.store import Store

    return Store(data / "lancedb", embedder, journal=data / "journal" / "turns.jsonl")


def _record(assistant: Any, prompts: dict, asked: dict) -> None:
    """Keep each reply's prompt and what its grounding was computed from (the latency rows
    replay both), whether or not the model is asked at all."""
    prompt_for, grounding = assistant.prompt_for, assistant._grounding

    def recording_prompt(*args: Any, **kwargs: Any) -> Any:
        messages = prompt_for(*args, **kwargs)
        prompts[ASKING.get()] = messages
        return messages

    def recording_grounding(person: Any, msg: Any, text: str, recalled: Any, recent: Any, vector: Any) -> Any:
        said = [t.text for t in recent if t.role == "user" and t.person_id == person.person_id]
        asked[ASKING.get()] = (text, person.display_name or msg.sender_name, recalled, said, vector)
        return grounding(person, msg, text, recalled, recent, vector)

    assistant.prompt_for, assistant._grounding = recording_prompt, recording_grounding


async def run_seed(
    loaded: Any,
    settings: Any,
    embedder: Any,
    cast: list[Scripted],
    seed: int,
    overrides: dict,
    grounded: bool = True,
) -> tuple[list[Row], dict, dict]:
    """Both sessions for everybody under one seed, in a fresh data dir."""
    from core.assistant import Assistant
    from core.llm.engine import Engine

    day1 = datetime(2026, 10, 5, 19, 0, tzinfo=UTC)
    day2 = day1 + timedelta(days=9)
    rows: list[Row] = []
    prompts: dict = {}
    asked: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        s = settings.model_copy(update={"data_dir": Path(tmp)})
        s.ensure_data_dir()
        for session, day in ((1, day1), (2, day2)):
            inner = Engine(loaded, s)
            _override(inner, overrides)
            engine = SeededEngine(inner, seed)
            assistant = Assistant(s, open_store(Path(tmp), embedder), engine)
            assistant.ground_replies = grounded
            _record(assistant, engine.prompts, asked)
            try:
                results = await asyncio.gather(
                    *(
                        converse(
                            assistant,
                            p,
                            p.session1 if session == 1 else p.session2,
                            f"{p.pid}-chat" if session == 1 or p.same_chat else f"{p.pid}-chat2",
                            day,
                            session,
                        )
                        for p in cast
                    )
                )
            finally:
                assistant.close()
                engine.engine.close()
            rows += [r for rs in results for r in rs]
            prompts.update(engine.prompts)
    return rows, prompts, asked


async def latency(
    loaded: Any,
    settings: Any,
    prompts: list[list[dict[str, str]]],
    overrides: dict,
    asked: list[tuple] | None = None,
    embedder: Any = None,
) -> tuple[list[float], list[float]]:
    """Time to first text and to the full reply, one request at a time (nothing else running).

    Default settings, prefix cache included, as a running server has them: one warm-up request
    (the first prompt, not timed) has served somebody before, so the shared start of every
    prompt (the persona) is cached, and each timed prompt's own part is not. With `asked` (what
    each reply's grounding came from) the reply path is timed as the assistant runs it after
    recall: grounding (embedding the person's statements), then the stream with its slip guard."""
    from core.grounding import for_reply, reply_stream
    from core.llm.engine import Engine

    engine = Engine(loaded, settings)
    _override(engine, overrides)
    ttft, full = [], []
    try:
        await engine.generate(prompts[0], max_new_tokens=2)
        for i, messages in enumerate(prompts[1:]):
            start = time.perf_counter()
            first = None
            grounding = guard = None
            if asked is not None:
                text, name, recalled, said, vector = asked[i + 1]
                grounding, guard = for_reply(
                    text, name, recalled, said, lambda t: [v.tolist() for v in embedder.embed(t)],
                    question_vector=vector,
                )  # fmt: skip
            async for _ in reply_stream(engine, messages, grounding=grounding, guard=guard, seed=i):
                first = first or time.perf_counter()
            end = time.perf_counter()
            ttft.append((first or end) - start)
            full.append(end - start)
    finally:
        engine.close()
    return ttft, full


def anchor(
    loaded: Any, prompts: list[list[dict[str, str]]], cap: int, batch: int = 16
) -> tuple[list[str], list[int]]:
    """transformers' `generate`, temperature 0.2 / top_p 0.9 (the model card's example)."""
    import torch

    tok = loaded.tokenizer
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    texts, counts = [], []
    torch.manual_seed(0)
    for i in range(0, len(prompts), batch):
        chunk = [
            tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
            for m in prompts[i : i + batch]
        ]
        enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = loaded.model.generate(
                **enc,
                max_new_tokens=cap,
                do_sample=True,
                temperature=0.2,
                top_p=0.9,
                pad_token_id=tok.pad_token_id,
            )
        for row in out[:, enc["input_ids"].shape[1] :]:
            ids = [t for t in row.tolist() if t != tok.pad_token_id]
            ends = [j for j, t in enumerate(ids) if t in loaded.eos_token_ids]
            ids = ids[: ends[0]] if ends else ids
            counts.append(len(ids))
            texts.append(tok.decode(ids, skip_special_tokens=True).strip())
    return texts, counts


async def anchor_latency(
    loaded: Any, prompts: list[list[dict[str, str]]], cap: int
) -> tuple[list[float], list[float]]:
    import torch

    tok = loaded.tokenizer
    ttft, full = [], []
    for messages in prompts:
        enc = tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                  return_tensors="pt", add_special_tokens=False)  # fmt: skip
        kw = dict(do_sample=True, temperature=0.2, top_p=0.9, pad_token_id=tok.pad_token_id)
        with torch.inference_mode():
            start = time.perf_counter()
            loaded.model.generate(**enc, max_new_tokens=1, **kw)
            ttft.append(time.perf_counter() - start)
            start = time.perf_counter()
            loaded.model.generate(**enc, max_new_tokens=cap, **kw)
            full.append(time.perf_counter() - start)
    return ttft, full


# --- the table ---------------------------------------------------------------------------------


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: list[tuple[str, dict]], title: str) -> Targets:
    table = Table(title=title)
    for col in ("configuration", "replies", "fact acc", "never-said: don't know / invented", "degenerate",
                "at cap", "identity slips", "wrong name", "other language", "requests on task",
                "words (median)", "words, 1-sentence Qs", "first token s", "full reply s"):  # fmt: skip
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for label, m in results:
        table.add_row(
            label,
            str(m["replies"]),
            fmt(m["fact_accuracy"], ".2f"),
            f"{fmt(m['dont_know'], '.2f')} / {fmt(m['invented'], '.2f')}",
            f"{m['degenerate']:.2f}",
            f"{m['at_cap']:.2f}",
            str(m["identity_slips"]),
            f"{m['wrong_name']:.2f}",
            f"{m['drift']:.2f}",
            f"{m['on_task']:.2f}",
            f"{m['words_median']:.0f}",
            f"{m['words_short_median']:.0f}",
            fmt(m["ttft_median"], ".2f"),
            fmt(m["full_median"], ".2f"),
        )
    Console(width=220).print(table)
    first = results[0][1]
    targets = Targets("reply_quality targets (first row)")
    targets.check("fact accuracy", round(first["fact_accuracy"], 2), ">=", 0.90)
    targets.check("degenerate share", round(first["degenerate"], 2), "<=", 0.05)
    targets.check("identity slips", first["identity_slips"], "==", 0)
    targets.check("invented never-said", round(first["invented"], 2), "<=", 0.20)
    targets.check("median words, 1-sentence questions", first["words_short_median"], "<=", 60)
    return targets


async def main(args: argparse.Namespace) -> Targets:
    import torch

    from core.config import Settings
    from core.llm.model import load_model
    from core.memory.embed import default_embedder

    torch.set_num_threads(args.threads)
    settings = Settings(model_cache_dir=args.model_dir.resolve(), _env_file=None)
    cap = settings.max_new_tokens
    loaded = load_model(settings)
    embedder = default_embedder()
    overrides = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}
    if args.continue_tokens is not None:
        overrides["continue_tokens"] = args.continue_tokens
    everybody = people(args.people, fresh=args.fresh)
    by_id = {p.pid: p for p in everybody}
    cast = [p for p in everybody if not args.only or p.part in args.only]
    scores = Scores(args.label)
    prompts: dict = {}
    asked: dict = {}
    started = time.perf_counter()
    for seed in args.seeds:
        t = time.perf_counter()
        rows, seed_prompts, seed_asked = await run_seed(
            loaded, settings, embedder, cast, seed, overrides, grounded=not args.ungrounded
        )
        scores.rows += rows
        prompts = prompts or seed_prompts
        asked = asked or seed_asked
        print(f"seed {seed}: {len(rows)} replies in {time.perf_counter() - t:.0f} s", flush=True)
        if args.dump:  # kept as the run goes: `--score` rebuilds the table from it
            _dump(args.dump, scores.rows)
    if args.dump:  # what the model was given (first seed), to read beside the replies
        with args.dump.with_suffix(".prompts.jsonl").open("w") as f:
            for (pid, ask), messages in prompts.items():
                f.write(json.dumps({"pid": pid, "ask": ask, "messages": messages}) + "\n")
    # latency on the same one-sentence questions, first seed's prompts, one at a time
    keys = [(p.pid, a.text) for p in cast for a in p.session2 if a.short][: args.latency]
    timed = [prompts[k] for k in keys]
    if len(timed) > 1:
        scores.ttft, scores.full = await latency(
            loaded,
            settings,
            timed,
            overrides,
            None if args.ungrounded else [asked[k] for k in keys],
            embedder,
        )
    results = [(f"{args.label}, seeds {','.join(map(str, args.seeds))}", scores.summary(cap, by_id))]
    results += slice_rows(scores, cap, by_id)
    if args.anchor:
        # spread over everybody, and each kind of session-2 ask in turn
        second = [
            (p, p.session2[j % len(p.session2)])
            for j in range(min(args.anchor, len(cast)))
            for p in [cast[j * len(cast) // args.anchor]]
        ]
        texts, counts = anchor(loaded, [prompts[(p.pid, a.text)] for p, a in second], cap)
        a = Scores("anchor")
        for (p, ask), text, n in zip(second, texts, counts, strict=True):
            a.rows.append(Row(p.pid, p.part, ask, text, n))
        a.ttft, a.full = await anchor_latency(loaded, timed[: max(1, len(timed) // 2)], cap)
        results.append((f"anchor: transformers generate T=0.2 top_p=0.9 ({len(second)} session-2 prompts)",
                        a.summary(cap, by_id)))  # fmt: skip
        if args.dump:
            _dump(args.dump.with_suffix(".anchor.jsonl"), a.rows)
    targets = print_table(
        results, f"Reply quality, {loaded.name}, {args.people} people, {time.perf_counter() - started:.0f} s"
    )
    if args.dump:
        _dump(args.dump, scores.rows)
    if args.json:
        args.json.write_text(json.dumps([{"label": k, **v} for k, v in results], indent=1))
    return targets


def _override(engine: Any, overrides: dict) -> None:
    """A sweep: the model's profile with some fields changed (`continue_tokens`, or sampling)."""
    import dataclasses

    sampling = {k: v for k, v in overrides.items() if k != "continue_tokens"}
    if sampling:
        engine.sampling = engine.sampling.replace(**sampling)
    if "continue_tokens" in overrides:
        engine.profile = dataclasses.replace(engine.profile, continue_tokens=overrides["continue_tokens"])


def _value(text: str) -> Any:
    """A --set value: a number, true/false, or text."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def score_dump(path: Path, people_count: int, label: str) -> Targets:
    """The table from a --dump file (a run cut short still has its finished seeds)."""
    cast = people(people_count)
    by_id = {p.pid: p for p in cast}
    if not path.read_text().strip():
        raise SystemExit(f"{path} has no replies")
    asks = {(p.pid, a.text): a for p in cast for a in (*p.session1, *p.session2)}
    scores = Scores(label)
    for line in path.read_text().splitlines():
        d = json.loads(line)
        scores.rows.append(
            Row(d["pid"], by_id[d["pid"]].part, asks[(d["pid"], d["ask"])], d["reply"], d["tokens"])
        )
    return print_table(
        [(label, scores.summary(CAP, by_id)), *slice_rows(scores, CAP, by_id)],
        f"Reply quality from {path.name}",
    )


def slice_rows(scores: Scores, cap: int, by_id: dict[str, Scripted]) -> list[tuple[str, dict]]:
    """One row per slice the run has (tuning, held-out, fresh held-out)."""
    out = []
    for part in (TUNING, HELD, FRESH_PART):
        pids = {r.pid for r in scores.rows if r.part == part}
        if pids:
            out.append((f"  {part} slice ({len(pids)} people)", scores.summary(cap, by_id, part)))
    return out


def _dump(path: Path, rows: list[Row]) -> None:
    with path.open("w") as f:
        for r in rows:
            f.write(json.dumps({"pid": r.pid, "kind": r.ask.kind, "ask": r.ask.text, "expected": r.ask.expected,
                                "tokens": r.tokens, "reply": r.reply}) + "\n")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=44)
    parser.add_argument("--fresh", type=int, default=FRESH, help="people of the second held-out slice")
    parser.add_argument("--only", nargs="+", choices=(TUNING, HELD, FRESH_PART), help="run these slices only")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--latency", type=int, default=12, help="one-sentence questions timed one at a time")
    parser.add_argument(
        "--anchor", type=int, default=48, help="session-2 prompts for the anchor row (0: none)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--continue-tokens", type=int, help="tokens the model adds after a grounded opening")
    parser.add_argument(
        "--ungrounded", action="store_true", help="the model answers questions about the person"
    )
    parser.add_argument("--label", default="engine, default settings")
    parser.add_argument("--model-dir", type=Path, default=Path("data/models"))
    parser.add_argument("--score", type=Path, help="print the table of a --dump file and stop")
    parser.add_argument("--set", action="append", default=[], help="sampling field=value (sweeps)")
    parser.add_argument("--dump", type=Path, help="write every reply here (jsonl) to read them")
    parser.add_argument("--json", type=Path, help="write the table here")
    args = parser.parse_args()
    done = score_dump(args.score, args.people, args.label) if args.score else asyncio.run(main(args))
    done.exit()
