"""Turn persona, profile, recalled items and the recent thread into chat messages.

The bundled model is small: it uses facts placed in the person's own message far better than
facts in the system message or in an earlier replayed turn (bench/recall_eval.py scores the
layouts), so the default layout puts what is known just before the new message.
"""

from __future__ import annotations

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
    head: list[dict[str, str]] = [{"role": "system", "content": system}]
    message = parts.message
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
