"""The engine on a tiny random Llama: streaming, stopping, batching, bad input."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from core.config import Settings
from core.llm.engine import Engine

HELLO = [{"role": "user", "content": "Hello, how are you today?"}]


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path, max_new_tokens=24, temperature=0.0)


@pytest.fixture
def engine(tiny_model, settings):
    eng = Engine(tiny_model, settings)
    yield eng
    eng.close()


async def collect(engine: Engine, messages: list[dict], **kw) -> list[str]:
    return [delta async for delta in engine.stream(messages, **kw)]


async def test_stream_yields_deltas_that_join_to_the_full_text(engine, tiny_model):
    deltas = await collect(engine, HELLO, max_new_tokens=20)
    assert len(deltas) > 1, "tokens must arrive one by one, not as one block"
    assert all(isinstance(d, str) and d for d in deltas)
    # the same greedy run, decoded in one piece, is the joined stream
    text = "".join(deltas)
    assert text == await engine.generate(HELLO, max_new_tokens=20)
    assert engine.stats.tokens == 40  # two runs of exactly 20 tokens (no end-of-turn drawn)


async def test_stops_at_max_new_tokens(engine):
    await collect(engine, HELLO, max_new_tokens=5)
    assert engine.stats.tokens == 5
    await collect(engine, HELLO, max_new_tokens=1)
    assert engine.stats.tokens == 6
    assert await collect(engine, HELLO, max_new_tokens=0) == []


async def test_stops_at_end_of_turn_token(tiny_model, settings):
    """Make the third greedy token an end-of-turn token: the reply must end right before it."""
    plain = Engine(tiny_model, settings)
    first = await plain.generate(HELLO, max_new_tokens=12)
    ids = plain.tokenizer(first, add_special_tokens=False)["input_ids"]
    plain.close()
    stop = ids[2]
    assert stop not in ids[:2]
    stopping = Engine(dataclasses.replace(tiny_model, eos_token_ids=frozenset({stop})), settings)
    try:
        text = await stopping.generate(HELLO, max_new_tokens=12)
        assert stopping.stats.tokens == 2
        assert text == plain.tokenizer.decode(ids[:2], clean_up_tokenization_spaces=False)
    finally:
        stopping.close()


async def test_concurrent_streams_match_their_solo_runs(engine):
    """Rows of different lengths share one padded batch and still produce exactly their solo output."""
    prompts = [
        [{"role": "user", "content": "Hi"}],
        [
            {"role": "system", "content": "You are Confidante."},
            {"role": "user", "content": "What am I training for? " * 6},
        ],
        [{"role": "user", "content": "The quick brown fox jumps over the lazy dog."}],
    ]
    lengths = [9, 17, 13]
    solo = [await engine.generate(p, max_new_tokens=n) for p, n in zip(prompts, lengths, strict=True)]
    together = await asyncio.gather(
        *[engine.generate(p, max_new_tokens=n) for p, n in zip(prompts, lengths, strict=True)]
    )
    assert together == solo
    assert engine.stats.max_batch >= 2, "concurrent requests should have shared a batch"


async def test_late_request_joins_a_running_batch(engine):
    """A request that arrives mid-generation gets its first token before the running one ends."""
    long_stream = engine.stream(HELLO, max_new_tokens=200)
    first = await long_stream.__anext__()
    assert first
    short = await asyncio.wait_for(engine.generate([{"role": "user", "content": "Hi"}], max_new_tokens=3), 30)
    assert short
    rest = [d async for d in long_stream]
    assert engine.count_tokens(first + "".join(rest)) > 20
    assert engine.stats.max_batch == 2


async def test_abandoned_stream_frees_its_row(engine):
    stream = engine.stream(HELLO, max_new_tokens=500)
    await stream.__anext__()
    await stream.aclose()
    # the engine keeps serving; the abandoned row does not run to 500 tokens
    assert await engine.generate(HELLO, max_new_tokens=4)
    assert engine.stats.tokens < 500


async def test_sampling_with_seed_is_reproducible_and_differs_from_greedy(engine):
    a = await engine.generate(HELLO, max_new_tokens=16, temperature=1.5, top_p=0.95, seed=7)
    b = await engine.generate(HELLO, max_new_tokens=16, temperature=1.5, top_p=0.95, seed=7)
    greedy = await engine.generate(HELLO, max_new_tokens=16, temperature=0)
    assert a == b
    assert a != greedy


async def test_prompt_longer_than_context_is_cut_not_crashed(tiny_model, tmp_path):
    eng = Engine(
        dataclasses.replace(tiny_model, context_length=64), Settings(data_dir=tmp_path, temperature=0)
    )
    try:
        huge = [{"role": "user", "content": "word " * 400}]
        text = await eng.generate(huge, max_new_tokens=50)
        assert isinstance(text, str)
        assert eng.stats.tokens <= 1, "a full context leaves room for at most one token"
    finally:
        eng.close()


async def test_odd_unicode_round_trips(engine):
    msgs = [{"role": "user", "content": "emoji 🏃‍♀️ · 日本語 · \u202e ' OR '1'='1"}]
    assert engine.count_tokens(engine.render(msgs)) > 10
    assert isinstance(await engine.generate(msgs, max_new_tokens=8), str)


def test_render_uses_the_chat_template(engine):
    text = engine.render([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert text.startswith("<|im_start|>system\nS<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")
    assert engine.context_tokens == 1024
