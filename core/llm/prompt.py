"""Turn persona, profile, recalled items and the recent thread into chat messages.

The bundled model is small: it uses facts placed in the person's own message far better than
facts in the system message or in an earlier replayed turn (bench/recall_eval.py scores the
layouts), so the default layout puts what is known just before the new message.

A small model also slips into the person's voice ("I'm Priya ...") and makes up answers about
them. So one short worked exchange shows how to answer a person who introduces themselves and
how to say "I don't know" about something never said, and a question about the person with
nothing relevant known says so in the prompt, the way the example does
(bench/reply_quality.py measures both).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from core.memory.recall import Recalled
from core.memory.records import Turn

Layout = Literal["system", "user_turn", "inline"]
LAYOUTS: tuple[Layout, ...] = ("system", "user_turn", "inline")
DEFAULT_LAYOUT: Layout = "inline"

ACK = "Thanks, I'll keep that in mind."


@dataclass(frozen=True)
class PromptParts:
    persona: str
    message: str
    profile: str = ""
    recalled: Sequence[Recalled] = ()
    recent: Sequence[Turn] = ()
    group: bool = False
    speaker: str = ""


def _date(item: Recalled) -> str:
    return f"{item.ts.day} {item.ts:%B %Y}"


def known_lines(parts: PromptParts) -> list[str]:
    """What is known, one line each, dated; the order is the recall order (best first)."""
    lines = [f"- {parts.profile}"] if parts.profile else []
    for item in parts.recalled:
        if item.kind == "turn" and item.role == "contact":  # imported: "Name: what they said"
            lines.append(f"- On {_date(item)}, {item.text}")
        elif item.kind == "turn":
            lines.append(f"- On {_date(item)} I said: {item.text}")
        else:
            lines.append(f"- ({item.kind}, since {_date(item)}) {item.text}")
    return lines


def with_known(facts: str, message: str) -> str:
    """The inline layout's message: what is known, then what the person just said. Adapter
    training writes its recall-layout examples with this same function."""
    return f"(What you know about me:\n{facts})\n\n{message}"


NOT_TOLD = "(I haven't told you this yet.)"

# One worked exchange at the start of every prompt (the same tokens for everybody, so the
# engine's prefix cache keeps it): answer a person who introduces themselves in your own voice,
# and say you don't know what they never told you.
EXAMPLE: tuple[dict[str, str], ...] = (
    {"role": "user", "content": f"What's my brother's name?\n{NOT_TOLD}"},
    {"role": "assistant", "content": "I don't know, you haven't told me about your brother yet."},
    {"role": "user", "content": "Hi, I'm Sam. I'm a baker and I love hiking."},
    {"role": "assistant", "content": "Nice to meet you, Sam! Baking and hiking sound like a lovely mix."},
)

# "What is my cat called?", "Where do I live?", "Do you remember my name?"; not requests
# ("How can I sleep better?", "What should I cook?")
_ABOUT_ME = re.compile(
    r"^\s*(?:(?:in|on|at|for) )?(?:what|what's|which|where|when|who|whose|how old|how many|do you (?:know|remember))\b"
    r"(?![^?]*\b(?:should|could|can|would|shall|might) i\b)[^?]*\b(?:my|i|am i|do i|did i)\b[^?]*\?",
    re.IGNORECASE,
)
_STOP = frozenset(
    [
        "what",
        "whats",
        "is",
        "are",
        "was",
        "were",
        "my",
        "me",
        "i",
        "am",
        "do",
        "did",
        "does",
        "have",
        "has",
        "the",
        "a",
        "an",
        "in",
        "of",
        "to",
        "for",
        "which",
        "who",
        "when",
        "how",
        "called",
        "name",
        "named",
        "remember",
        "you",
        "your",
        "tell",
        "can",
        "could",
        "please",
        "again",
        "kind",
    ]
)


def asks_about_me(message: str) -> bool:
    """A question about the person themselves ("What is my cat called?")."""
    return bool(_ABOUT_ME.search(message.strip()))


# words that ask about the same thing as other words do ("What do I do for a living?" is
# answered by "I work as a nurse"); a word maps to its topic, or stands for itself
_TOPIC_WORDS = {
    "work": "work job living career profession occupation employer company office",
    "home": "live lives living city town country home where",
    "pet": "pet pets cat cats dog dogs",
    "birthday": "birthday born birth month",
    "car": "car drive drives vehicle",
    "sport": "training train race marathon running triathlon preparing",
    "language": "language languages learning studying speak",
    "music": "instrument instruments play band",
    "allergy": "allergic allergy allergies",
    "food": "food eat favourite favorite dish",
}
_TOPICS: dict[str, set[str]] = {}
for _topic, _words in _TOPIC_WORDS.items():
    for _word in _words.split():
        _TOPICS.setdefault(_word, set()).add(_topic)


def _stems(text: str) -> set[str]:
    words = re.findall(r"[a-z]+", text.lower().replace("'s", ""))
    return {t for w in words if w not in _STOP and len(w) > 2 for t in _TOPICS.get(w, {w[:5]})}


def nothing_known_about(message: str, known: Sequence[str]) -> bool:
    """Whether none of `known` shares a content word with a personal question: then the
    prompt says so, and the small model says it doesn't know instead of inventing."""
    if not asks_about_me(message):
        return False
    wanted = _stems(message)
    if not wanted:
        return False
    return not any(wanted & _stems(line) for line in known)


def _recent_messages(recent: Sequence[Turn], group: bool) -> list[dict[str, str]]:
    messages = []
    for turn in recent:
        text = turn.text
        if group and turn.role == "user":
            text = f"[{turn.person_id}] {text}"
        messages.append({"role": turn.role, "content": text})
    # chat templates want alternating roles: merge neighbours of the same role
    merged: list[dict[str, str]] = []
    for m in messages:
        if merged and merged[-1]["role"] == m["role"]:
            merged[-1] = {"role": m["role"], "content": merged[-1]["content"] + "\n" + m["content"]}
        else:
            merged.append(m)
    return merged


def build_messages(
    parts: PromptParts,
    *,
    layout: Layout = DEFAULT_LAYOUT,
    budget_tokens: int,
    count_tokens: Callable[[str], int],
) -> list[dict[str, str]]:
    """Chat messages within `budget_tokens`: the oldest recent turns are dropped first."""
    known = known_lines(parts)
    system = parts.persona
    if parts.group:
        system += (
            " You are in a group chat; answer the person who addressed you."
            " Use only what was said in this group."
        )
    head: list[dict[str, str]] = [{"role": "system", "content": system}, *EXAMPLE]
    message = parts.message
    told = [*known, *(t.text for t in parts.recent if t.role == "user")]
    if nothing_known_about(message, told):
        message = f"{message}\n{NOT_TOLD}"
    if known:
        facts = "\n".join(known)
        if layout == "system":
            head[0] = {"role": "system", "content": f"{system}\n\nWhat you know about this person:\n{facts}"}
        elif layout == "user_turn":
            head += [
                {"role": "user", "content": f"Some things I told you before:\n{facts}"},
                {"role": "assistant", "content": ACK},
            ]
        else:
            message = with_known(facts, message)
    tail = [{"role": "user", "content": message}]

    def cost(msgs: list[dict[str, str]]) -> int:
        # ChatML wraps each message in 5 tokens; the reply's header adds 3
        return sum(count_tokens(m["content"]) + 5 for m in msgs) + 3

    recent = list(parts.recent)
    while recent:
        body = _recent_messages(recent, parts.group)
        last = tail
        if body and body[-1]["role"] == "user":  # unanswered context joins the new message
            last = [{"role": "user", "content": body.pop()["content"] + "\n" + message}]
        if cost(head + body + last) <= budget_tokens:
            return head + body + last
        recent = recent[1:]
    return head + tail
