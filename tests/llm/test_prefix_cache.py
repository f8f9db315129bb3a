"""Prompt prefix reuse: a conversation's next message prefills only its new tokens, with the
same result as prefilling everything, and never reuses another adapter's keys and values."""

from __future__ import annotations

import torch

from core.config import Settings
from core.llm.engine import Engine
from core.llm.prefix_cache import PrefixCache

HISTORY = [
    {"role": "system", "content": "You are Confidante, a warm, concise personal assistant. " * 4},
    {"role": "user", "content": "I am training for the Berlin marathon in September. " * 3},
    {"role": "assistant", "content": "That is a great goal; how many weeks do you have left? " * 2},
]


def settings(tmp_path, mb: int) -> Settings:
    return Settings(data_dir=tmp_path, max_new_tokens=12, temperature=0.0, prefix_cache_mb=mb, _env_file=None)


async def conversation(engine: Engine) -> list[str]:
    first = HISTORY + [{"role": "user", "content": "Sixteen weeks. What should I eat?"}]
    reply = await engine.generate(first)
    second = first + [
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "And the week before the race?"},
    ]
    return [reply, await engine.generate(second)]


async def test_follow_up_reuses_the_prefix_and_answers_the_same(tiny_model, tmp_path):
    cached = Engine(tiny_model, settings(tmp_path, 64))
    plain = Engine(tiny_model, settings(tmp_path, 0))
    try:
        assert await conversation(cached) == await conversation(plain)
        assert cached.prefixes.hits == 1
        shared = len(cached.encode_messages(HISTORY)) - 8
        assert cached.prefixes.reused_tokens >= shared, "the whole shared history must be reused"
        assert plain.prefixes.hits == 0
    finally:
        cached.close()
        plain.close()


async def test_forgetting_drops_every_cached_prefix(tiny_model, tmp_path):
    engine = Engine(tiny_model, settings(tmp_path, 64))
    try:
        await conversation(engine)
        assert len(engine.prefixes) > 0
        engine.forget_prefixes()
        await engine.generate(HISTORY)  # the clear is handled in order, before this request
        assert engine.prefixes.hits == 1, "nothing cached before the clear may serve this request"
    finally:
        engine.close()


def layers(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.randn(1, 2, n, 4), torch.randn(1, 2, n, 4)) for _ in range(3)]


def test_prefixes_of_another_adapter_are_not_reused():
    cache = PrefixCache(2**20, min_tokens=4)
    ids = list(range(100, 140))
    cache.store("alice@v1", ids, layers(len(ids)))
    assert cache.lookup("base", ids + [7]) is None
    assert cache.lookup("alice@v2", ids + [7]) is None
    hit = cache.lookup("alice@v1", ids + [7])
    assert hit is not None and hit[0] == len(ids)
    assert hit[1][0][0].shape[-2] == len(ids)


def test_lookup_leaves_a_token_to_prefill_and_respects_the_minimum():
    cache = PrefixCache(2**20, min_tokens=8)
    ids = list(range(50))
    cache.store("base", ids, layers(50))
    n, kv = cache.lookup("base", ids)
    assert n == 49 and kv[0][0].shape[-2] == 49
    assert cache.lookup("base", ids[:5] + [999] * 40) is None  # only 5 tokens in common


def test_the_byte_bound_evicts_least_recently_used():
    one = sum(k.numel() * 4 * 2 for k, _ in layers(40))
    cache = PrefixCache(3 * one, min_tokens=4)
    for start in (0, 1000, 2000, 3000):
        cache.store("base", list(range(start, start + 40)), layers(40))
    assert len(cache) == 3 and cache.nbytes <= 3 * one
    assert cache.lookup("base", list(range(0, 41))) is None  # the oldest went first
    assert cache.lookup("base", list(range(3000, 3041))) is not None


def test_a_longer_prompt_of_the_same_conversation_replaces_the_shorter():
    cache = PrefixCache(2**20, min_tokens=4)
    cache.store("base", list(range(40)), layers(40))
    cache.store("base", list(range(60)), layers(60))
    assert len(cache) == 1
    assert cache.lookup("base", list(range(70)))[0] == 60
