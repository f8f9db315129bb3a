"""A person's adapter training set: their own current data as question->answer pairs.

Why this many pairs from so little: a person may have told the assistant only a handful of facts,
and one question->answer pair per fact teaches a small LoRA the string, not the fact (measured:
the adapter alone then answered 1 of 6 re-worded questions). So each memory becomes several
question wordings, each asked plainly and in a chat-like variant, with two answer forms, plus
one example in the layout recall uses (the person's memories listed before the question), so
the adapter also keeps reading recalled facts well. The held-out slice the gate judges is whole
wordings (with their variants) that training never sees.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from core.config import Settings
from workers.replay import Pair

_SECOND_PERSON = [
    (r"\bI'm\b", "you're"), (r"\bI am\b", "you are"), (r"\bI've\b", "you've"), (r"\bI'll\b", "you'll"),
    (r"\bI'd\b", "you'd"), (r"\bI was\b", "you were"), (r"\bI\b", "you"), (r"\bme\b", "you"),
    (r"\bmy\b", "your"), (r"\bMy\b", "Your"), (r"\bmine\b", "yours"), (r"\bmyself\b", "yourself"),
]  # fmt: skip
_PREPS = {"for", "to", "in", "at", "on", "with", "about", "as", "from", "of"}
_REJECTIONS = ("no", "nope", "wrong", "that's wrong", "that is wrong", "not what", "incorrect", "stop")


def to_second_person(statement: str) -> str:
    """'I'm training for the Berlin marathon.' -> "You're training for the Berlin marathon." """
    text = statement.strip()
    for pattern, repl in _SECOND_PERSON:
        text = re.sub(pattern, repl, text)
    text = text[0].upper() + text[1:] if text else text
    return text if text.endswith((".", "!", "?")) else text + "."


def _first_person_verb(verb: str) -> str:
    irregular = {"is": "am", "has": "have", "does": "do", "was": "was", "goes": "go"}
    if verb in irregular:
        return irregular[verb]
    if verb.endswith("ies") and len(verb) > 4:
        return verb[:-3] + "y"
    if verb.endswith(("ches", "shes", "sses", "xes", "oes")):
        return verb[:-2]
    if verb.endswith("s") and not verb.endswith("ss"):
        return verb[:-1]
    return verb


def to_first_person(text: str, name: str = "") -> str:
    """Normalise a memory ('Dana likes tea', 'Lives in Berlin', "Dana's dog is Rufus") to 'I ...'."""
    t = text.strip().rstrip(".")
    if not t:
        return t
    if re.match(r"^(I|I'm|My|I've|I'd|I'll)\b", t):
        return t
    if name:
        t = re.sub(rf"^{re.escape(name)}'s\b", "My", t)
        if t.startswith(name + " "):
            t = t[len(name) + 1 :]
    if t.startswith("My "):
        return t
    if re.match(r"^[A-Z]\w+ing\b", t):  # "Working on a billing service" (the extractor's form)
        return "I'm " + t[0].lower() + t[1:]
    first, _, rest = t.partition(" ")
    if first.lower() in {
        "is",
        "has",
        "likes",
        "lives",
        "works",
        "loves",
        "prefers",
        "wants",
        "plays",
        "drives",
        "studies",
        "owns",
        "hates",
        "enjoys",
        "speaks",
        "needs",
        "goes",
        "does",
        "was",
    }:
        verb = _first_person_verb(first.lower())
        if verb == "am" and rest:
            return f"I'm {rest}"
        return f"I {verb} {rest}".strip()
    return t


def questions_for(statement: str) -> list[str]:
    """Questions a person might ask whose answer is this first-person statement (several
    wordings: a small adapter taught one wording learns that string, not the fact)."""
    s = statement.strip().rstrip(".!")
    qs: list[str] = []
    if m := re.match(r"^I(?:'m| am) (\w+ing)\b\s*(\w*)", s):
        verb, nxt = m.group(1), m.group(2)
        what = f"{verb} {nxt}" if nxt in _PREPS else verb
        qs += [
            f"What am I {what}?",
            f"Do you remember what I'm {what}?",
            f"Do you know what I'm {what}?",
            f"What did I say I'm {what}?",
        ]
    elif m := re.match(r"^I(?:'m| am) (\w+) (to|of|about|with|in|on|at|for|from)\b", s):
        what = f"{m.group(1)} {m.group(2)}"
        qs += [
            f"What am I {what}?",
            f"Remind me, what am I {what}?",
            f"Do you know what I'm {what}?",
            f"What did I say I'm {what}?",
        ]
    elif m := re.match(r"^My (.+?)(?:'s name)? (?:is|are) called (.+)$", s) or re.match(
        r"^My (.+?)'s name is (.+)$", s
    ):
        thing = m.group(1)
        qs += [
            f"What is my {thing} called?",
            f"What's my {thing}'s name?",
            f"What is the name of my {thing}?",
            f"Do you remember my {thing}'s name?",
        ]
    elif m := re.match(r"^My (.+?) (?:is|are) in (.+)$", s):
        thing = m.group(1)
        qs += [
            f"When is my {thing}?",
            f"In which month is my {thing}?",
            f"Where is my {thing}?",
            f"Do you remember when my {thing} is?",
        ]
    elif m := re.match(r"^My (.+?) (?:is|are) (.+)$", s):
        thing = m.group(1)
        qs += [
            f"What is my {thing}?",
            f"Do you remember my {thing}?",
            f"Do you know my {thing}?",
            f"What did I say my {thing} is?",
        ]
    elif m := re.match(r"^I (\w+) (as|in|at|for|with|on|to|from)\b", s):
        verb, prep = m.group(1), m.group(2)
        if (verb, prep) == ("live", "in"):
            qs += ["Where do I live?", "Which city do I live in?", "Do you know where I live?"]
        elif (verb, prep) == ("work", "as"):
            qs += ["What is my job?", "What do I do for a living?", "What do I work as?"]
        else:
            qs += [
                f"What do I {verb} {prep}?",
                f"Do you know what I {verb} {prep}?",
                f"Remind me, what do I {verb} {prep}?",
                f"What did I say I {verb} {prep}?",
            ]
    elif m := re.match(r"^I (\w+) (?:the |a |an )?(.+)$", s):
        verb = m.group(1)
        qs += [
            f"What do I {verb}?",
            f"Do you remember what I {verb}?",
            f"Do you know what I {verb}?",
            f"What did I say I {verb}?",
        ]
    qs.append(f"What did I tell you about {_topic(s)}?")
    return list(dict.fromkeys(qs))


def _topic(statement: str) -> str:
    words = [
        w
        for w in re.findall(r"[A-Za-z']+", statement)
        if w.lower() not in {"i", "i'm", "my", "am", "is", "the", "a", "an"}
    ]
    return (
        "my " + words[0].lower()
        if words and words[0].lower() in {"dog", "cat", "sister", "brother", "birthday", "job"}
        else "myself"
    )


# chat-like ways of asking the same thing; one per wording, chosen per memory (no randomness
# between runs: the same data trains the same adapter)
_DECORATIONS = (
    "Quick question: {lc}",
    "Hey, {lc}",
    "Remind me: {lc}",
    "{q} I forgot.",
    "Can you tell me? {q}",
    "{bare}",
)


def _decorate(question: str, choice: int) -> str:
    template = _DECORATIONS[choice % len(_DECORATIONS)]
    lc = question[0].lower() + question[1:]
    return template.format(q=question, lc=lc, bare=question.rstrip("?").lower())


def answer_forms(statement: str) -> list[str]:
    """The fact said back in the second person, plainly and as something the person told."""
    plain = to_second_person(statement)
    told = plain[0].lower() + plain[1:] if plain.startswith("You") else plain
    return [plain, f"You told me {told}"]


@dataclass
class PersonData:
    pairs: list[tuple[str, Pair]]  # (memory or turn id, pair); several pairs share one source
    sources: list[str]


def _known_block(person: Any, memories: list[Any], rng: random.Random, keep: Any) -> str:
    """The person's memories as recall shows them (core.llm.prompt), `keep` among them."""
    from core.llm.prompt import PromptParts, known_lines
    from core.memory.recall import Recalled

    others = [m for m in memories if m.id != keep.id]
    shown = rng.sample(others, min(3, len(others))) + [keep]
    rng.shuffle(shown)
    items = [Recalled(text=m.text, kind=m.kind, score=1.0, ts=m.valid_from) for m in shown]
    profile = person.profile if person is not None else ""
    return "\n".join(known_lines(PromptParts(persona="", message="", profile=profile, recalled=items)))


def build_person_pairs(person_id: str, store: Any, settings: Settings) -> PersonData:
    """Training pairs from this person's own current data, and the ids they came from.

    Only this person's rows are read (store filters by person_id); superseded and forgotten
    memories are gone from `memories_of(current_only=True)`; group-scoped memories are left out
    unless settings allow them. A pair's `group` names its wording: variants of one wording share
    it, so the held-out split can keep a whole wording out of training.
    """
    from core.llm.prompt import with_known
    from core.memory.records import PRIVATE

    person = store.person(person_id)
    name = person.display_name if person else ""
    scopes = None if settings.adapter_include_group_memories else [PRIVATE]
    pairs: list[tuple[str, Pair]] = []
    sources: list[str] = []
    memories = [
        m
        for m in store.memories_of(person_id, current_only=True, visibilities=scopes)
        if m.person_id == person_id  # defence in depth: never another person's words
    ]
    for memory in memories:
        statement = to_first_person(memory.text, name)
        if not statement:
            continue
        sources.append(memory.id)
        rng = random.Random(memory.id)
        answers = answer_forms(statement)
        wordings = questions_for(statement)
        offset = rng.randrange(len(_DECORATIONS))
        for j, question in enumerate(wordings):
            group = f"{memory.id}:{j}"
            pairs.append((memory.id, Pair(question, answers[j % 2], "memory", group)))
            variant = _decorate(question, offset + j)
            pairs.append((memory.id, Pair(variant, answers[(j + 1) % 2], "memory", group)))
        j = rng.randrange(len(wordings))
        block = _known_block(person, memories, rng, memory)
        pairs.append(
            (memory.id, Pair(with_known(block, wordings[j]), answers[0], "memory-recall", f"{memory.id}:{j}"))
        )
    turns = [t for t in store.turns_of(person_id, visibilities=scopes) if t.person_id == person_id]
    for i, turn in enumerate(turns[:-1]):
        reply = turns[i + 1]
        if turn.role != "user" or reply.role != "assistant" or not turn.text.strip().endswith("?"):
            continue
        after = turns[i + 2].text.strip().lower() if i + 2 < len(turns) else ""
        if after.startswith(_REJECTIONS) or not reply.text.strip():
            continue  # the person corrected it: not an accepted reply
        sources += [turn.id, reply.id]
        pairs.append((turn.id, Pair(turn.text.strip()[:500], reply.text.strip()[:800], "turn", turn.id)))
    return PersonData(pairs, list(dict.fromkeys(sources)))


def split_heldout(data: PersonData, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """Hold out one whole wording of each memory that has three or more (same fact, wording
    never trained on): its plain and chat-like pairs are the gate's held-out slice, and its
    recall-layout pair is dropped (the fact is in that prompt, it would judge nothing)."""
    by_source: dict[str, list[Pair]] = {}
    askers: dict[str, set[str]] = {}  # question text -> the sources it is asked about
    for source, pair in data.pairs:
        by_source.setdefault(source, []).append(pair)
        askers.setdefault(pair.question, set()).add(source)
    rng = random.Random(seed)
    train: list[Pair] = []
    held: list[Pair] = []
    for source, group in by_source.items():
        wordings = list(dict.fromkeys(p.group or p.question for p in group if p.source != "memory-recall"))
        # a wording asked about other facts too ("What did I tell you about myself?") is trained
        # for those, so it would not be unseen: hold out one that belongs to this fact alone
        own = [
            w
            for w in wordings
            if all(askers[p.question] == {source} for p in group if (p.group or p.question) == w)
        ]
        if len(wordings) >= 3 and own:
            out = own[rng.randrange(len(own))]
            held += [p for p in group if (p.group or p.question) == out and p.source != "memory-recall"]
            train += [p for p in group if (p.group or p.question) != out]
        else:
            train += group
    return train, held


__all__ = [
    "PersonData",
    "answer_forms",
    "build_person_pairs",
    "questions_for",
    "split_heldout",
    "to_first_person",
    "to_second_person",
]
