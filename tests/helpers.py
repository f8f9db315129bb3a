"""Small builders the tests share: messages as channels would make them."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from core.assistant import Assistant
from core.grounding import CONTINUATION_TOKENS
from core.messages import Incoming


class RecordingEngine:
    """The real engine, remembering every prompt it was given (to check what reached it)."""

    def __init__(self, engine: Any, *, continues: bool = False) -> None:
        """`continues`: a grounded answer (core/grounding.py) still goes to the model for one more
        sentence, whatever the model's profile says, so a test can check the prompt it got."""
        self.engine = engine
        self.prompts: list[list[dict[str, str]]] = []
        self.prefixes_dropped = 0
        self.context_tokens = engine.context_tokens
        self.accepts_prefix = getattr(engine, "accepts_prefix", False)  # grounded replies (core/grounding.py)
        self.profile = getattr(engine, "profile", None)  # how much a grounded reply continues
        if continues and self.profile is not None:
            self.profile = dataclasses.replace(self.profile, continue_tokens=CONTINUATION_TOKENS)

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    async def stream(self, messages: list[dict[str, str]], **kwargs: Any) -> AsyncIterator[str]:
        self.prompts.append(messages)
        async for delta in self.engine.stream(messages, **kwargs):
            yield delta

    def forget_prefixes(self) -> None:
        self.prefixes_dropped += 1
        self.engine.forget_prefixes()

    def last_prompt_text(self) -> str:
        return "\n".join(m["content"] for m in self.prompts[-1])


_counter = iter(range(1, 10**9))


def dm(text: str, person: str = "dana", platform: str = "console", **kw: Any) -> Incoming:
    return Incoming(
        platform=platform,
        chat_id=kw.pop("chat_id", person),
        sender_id=person,
        sender_name=person,
        text=text,
        message_id=kw.pop("message_id", f"m{next(_counter)}"),
        **kw,
    )


def group(text: str, person: str, chat_id: str = "g1", addressed: bool = True, **kw: Any) -> Incoming:
    return Incoming(
        platform=kw.pop("platform", "telegram"),
        chat_id=chat_id,
        chat_kind="group",
        sender_id=person,
        sender_name=person,
        text=text,
        message_id=kw.pop("message_id", f"g{next(_counter)}"),
        addressed=addressed,
        **kw,
    )


async def say(assistant: Assistant, msg: Incoming) -> str | None:
    reply = await assistant.handle(msg)
    return None if reply is None else await reply.collect()
