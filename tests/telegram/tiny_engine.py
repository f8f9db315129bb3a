"""A tiny random Llama for the Telegram integration tests.

When core.llm's `Engine` and `tiny_llama` are on main, the tests use them. Until then this
module builds the same kind of model here: a random LlamaForCausalLM over a character
vocabulary, generating greedily one token at a time in a thread, so replies stream as real
token deltas through the real Assistant.
"""

from __future__ import annotations

import asyncio
import string
from collections.abc import AsyncIterator
from typing import Any

from core.config import Settings

_VOCAB = list(string.ascii_letters + string.digits + " .,!?'-:\n")


class CharLlamaEngine:
    """Greedy generation on a tiny random Llama; one character per token."""

    def __init__(self, settings: Settings, *, seed: int = 0) -> None:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        self.settings = settings
        self.context_tokens = 4096
        self._index = {ch: i for i, ch in enumerate(_VOCAB)}
        self.eos = len(_VOCAB)
        config = LlamaConfig(
            vocab_size=len(_VOCAB) + 1,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=self.context_tokens,
            eos_token_id=self.eos,
            initializer_range=0.5,
        )
        torch.manual_seed(seed)
        self.model = LlamaForCausalLM(config).eval()
        self._torch = torch

    def count_tokens(self, text: str) -> int:
        return len(text)

    def _encode(self, messages: list[dict[str, str]]) -> list[int]:
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        return [self._index.get(ch, self._index[" "]) for ch in text][-256:]

    def _next(self, ids: list[int], step: int) -> int:
        with self._torch.no_grad():
            logits = self.model(self._torch.tensor([ids])).logits[0, -1]
        if step < 4:
            logits[self.eos] = float("-inf")  # say something before stopping
        return int(logits.argmax())

    async def stream(self, messages: list[dict[str, str]], **kwargs: Any) -> AsyncIterator[str]:
        ids = self._encode(messages)
        limit = kwargs.get("max_new_tokens") or self.settings.max_new_tokens
        for step in range(limit):
            token = await asyncio.to_thread(self._next, ids[-256:], step)
            if token == self.eos:
                return
            ids.append(token)
            yield _VOCAB[token]


def tiny_engine(settings: Settings) -> Any:
    try:
        from core.llm.engine import Engine
        from core.llm.model import tiny_llama
    except ImportError:
        return CharLlamaEngine(settings)
    return Engine(tiny_llama(), settings)
