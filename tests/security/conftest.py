"""Fixtures for the attacks: the real Assistant on real LanceDB files with a tiny random Llama.

The engine is the project's own (core.llm.engine.Engine over core.llm.model.tiny_llama) once
that lands; until then a tiny random LlamaForCausalLM with a byte-level ChatML tokenizer built
here. Either way the prompts it receives are recorded, and the privacy checks read those
assembled prompts, so no result depends on what a model happens to say.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.assistant import Assistant
from core.config import Settings
from core.memory.embed import default_embedder
from core.memory.store import Store
from tests.helpers import RecordingEngine

_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(["what do you know about my plans for the week? " * 3], trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw, eos_token="<|im_end|>", bos_token="<|im_start|>", pad_token="<|endoftext|>"
    )
    tok.chat_template = _CHATML
    return tok


class TinyEngine:
    """A random two-layer Llama that answers greedily: the real model path, at test speed."""

    def __init__(self, max_new_tokens: int = 6, context_tokens: int = 1024) -> None:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        self.tokenizer = _tokenizer()
        self.context_tokens = context_tokens
        self.max_new_tokens = max_new_tokens
        config = LlamaConfig(
            vocab_size=len(self.tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=context_tokens * 4,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        torch.manual_seed(0)
        self.model = LlamaForCausalLM(config).eval()

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _generate(self, messages: list[dict[str, str]], max_new: int) -> list[int]:
        import torch

        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        ids = ids[:, -(self.context_tokens * 2) :]
        with torch.inference_mode():
            out = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        return out[0, ids.shape[1] :].tolist()

    async def stream(
        self, messages: list[dict[str, str]], *, adapter: str | None = None, **kwargs: Any
    ) -> AsyncIterator[str]:
        max_new = kwargs.get("max_new_tokens") or self.max_new_tokens
        tokens = await asyncio.to_thread(self._generate, messages, max_new)
        for token in tokens:
            yield self.tokenizer.decode([token], skip_special_tokens=True)


def _project_engine() -> Any | None:
    """The project's Engine over its tiny Llama, when the llm work has landed."""
    try:
        from core.llm.engine import Engine
        from core.llm.model import tiny_llama
    except ImportError:
        return None
    return Engine(tiny_llama(), Settings(max_new_tokens=6, temperature=0.0, _env_file=None))


@pytest.fixture(scope="session")
def base_engine() -> Any:
    return _project_engine() or TinyEngine()


@pytest.fixture(scope="session")
def embedder():
    return default_embedder()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", max_new_tokens=6, temperature=0.0, _env_file=None)


@pytest.fixture
def store(settings: Settings, embedder) -> Store:
    settings.ensure_data_dir()
    return Store(settings.data_dir / "lancedb", embedder)


@pytest.fixture
def engine(base_engine) -> RecordingEngine:
    return RecordingEngine(base_engine)


@pytest.fixture
def assistant(settings: Settings, store: Store, engine: RecordingEngine) -> Assistant:
    return Assistant(settings, store, engine)
