"""The sampler: replies that would loop stop, and every row keeps its own settings in a batch."""

from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace

import pytest
import torch

from core.config import Settings
from core.llm.engine import Engine
from core.llm.profiles import profile_for
from core.llm.sampling import RowState, Sampling, next_tokens, visible

HELLO = [{"role": "user", "content": "Hello, how are you today?"}]
SENTENCE = "You are training for the Berlin marathon. "


class Looping(torch.nn.Module):
    """A deterministic fake model that says SENTENCE again and again: the next token is always
    the one after the current token in the sentence's cycle. The tiny model underneath keeps the
    engine's caches real."""

    def __init__(self, inner: torch.nn.Module, cycle: list[int]) -> None:
        super().__init__()
        self.inner, self.cycle, self.config = inner, cycle, inner.config

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def forward(self, input_ids: torch.Tensor, **kwargs):
        logits = self.inner(input_ids=input_ids, **kwargs).logits.clone()
        logits[:, -1, :] = -10.0
        for row, last in enumerate(input_ids[:, -1].tolist()):
            at = self.cycle.index(last) if last in self.cycle else -1
            logits[row, -1, self.cycle[(at + 1) % len(self.cycle)]] = 10.0
        # a close second choice, so a row that may not repeat still says something
        logits[:, -1, self.cycle[0]] = torch.maximum(logits[:, -1, self.cycle[0]], torch.tensor(9.0))
        return SimpleNamespace(logits=logits)


@pytest.fixture
def looping(tiny_model, tmp_path):
    cycle = tiny_model.tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
    assert len(set(cycle)) == len(cycle), "the cycle must be unambiguous"
    fake = dataclasses.replace(tiny_model, model=Looping(tiny_model.model, cycle))
    engine = Engine(fake, Settings(data_dir=tmp_path, temperature=0, adapters_enabled=False, _env_file=None))
    yield engine
    engine.close()


async def test_a_looping_model_runs_to_the_cap_without_the_guards(looping):
    text = await looping.generate(HELLO, max_new_tokens=60, sampling=Sampling(temperature=0))
    assert text.count("Berlin marathon") >= 5
    assert looping.stats.tokens == 60


async def test_a_reply_that_repeats_a_sentence_stops_before_the_repeat(looping):
    guarded = Sampling(temperature=0, stop_on_repeat=True)
    deltas = [d async for d in looping.stream(HELLO, max_new_tokens=200, sampling=guarded)]
    assert "".join(deltas).strip() == SENTENCE.strip()  # said once; the second time never shown
    assert looping.stats.tokens < 2 * len(looping.tokenizer(SENTENCE)["input_ids"]) + 2


async def test_the_default_profile_stops_a_looping_model(looping):
    text = await looping.generate(HELLO, max_new_tokens=200)
    assert looping.stats.tokens < 200
    assert text.count("Berlin marathon") <= 1


def test_no_repeat_ngram_bans_only_the_replys_own_ngrams():
    row = RowState(Sampling(temperature=0, no_repeat_ngram=3))
    for token in (5, 6, 7, 1, 5, 6):  # "5 6 7" was said; "5 6" again must not go on with 7
        row.observe(token)
    logits = torch.zeros(1, 10)
    logits[0, 7] = 5.0
    logits[0, 8] = 4.0
    assert next_tokens(logits, [row]) == [8]
    fresh = RowState(Sampling(temperature=0, no_repeat_ngram=3))  # the prompt's tokens count for nothing
    assert next_tokens(logits, [fresh]) == [7]


def test_penalties_follow_their_definitions_on_the_replys_tokens_only():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    row = RowState(Sampling(repetition_penalty=2.0, frequency_penalty=0.25, presence_penalty=0.1))
    for token in (0, 0, 1):
        row.observe(token)
    out = row.adjust(logits[0].clone())
    expected = torch.tensor([2.0 / 2 - 0.25 * 2 - 0.1, -2.0 * 2 - 0.25 - 0.1, 1.0, 0.5])
    assert torch.allclose(out, expected)


async def test_penalties_apply_per_row_in_a_mixed_batch(tiny_model, tmp_path):
    """Two rows with two settings decode in one batch; each matches its own solo run."""
    settings = Settings(data_dir=tmp_path, temperature=0, adapters_enabled=False, _env_file=None)
    strict = Sampling(temperature=0, repetition_penalty=3.0, frequency_penalty=1.0, no_repeat_ngram=2)
    plain = Sampling(temperature=0)
    prompts = [HELLO, [{"role": "user", "content": "What am I training for?"}]]
    engine = Engine(tiny_model, settings)
    try:
        solo = [
            await engine.generate(prompts[0], max_new_tokens=24, sampling=strict),
            await engine.generate(prompts[1], max_new_tokens=24, sampling=plain),
        ]
        unpenalized = await engine.generate(prompts[0], max_new_tokens=24, sampling=plain)
        assert solo[0] != unpenalized, "the penalties must change this reply, or the test shows nothing"
        engine.stats.max_batch = 0
        together = await asyncio.gather(
            engine.generate(prompts[0], max_new_tokens=24, sampling=strict),
            engine.generate(prompts[1], max_new_tokens=24, sampling=plain),
        )
        assert engine.stats.max_batch == 2, "both rows must have shared a batch"
        assert list(together) == solo
    finally:
        engine.close()


def test_stop_strings_end_the_reply_and_hold_back_their_start():
    s = Sampling(stop=("\nUser:",))
    assert visible("Sure.\nUser: and then", s, final=False) == ("Sure.", True)
    assert visible("Sure.\nUs", s, final=False) == ("Sure.", False)  # might be the stop: wait
    assert visible("Sure.\nUs", s, final=True) == ("Sure.\nUs", False)


def test_a_sentence_in_progress_that_matches_an_earlier_one_waits():
    s = Sampling(stop_on_repeat=True)
    assert visible("She is a lovely cat. She is a", s, final=False) == ("She is a lovely cat. ", False)
    assert visible("She is a lovely cat. She is a good", s, final=False)[0].endswith("good")
    assert visible("She is a lovely cat. She is a lovely cat. ", s, final=False) == (
        "She is a lovely cat.",
        True,
    )


def test_profiles_pick_by_model_size(tiny_model):
    small = profile_for(tiny_model)
    assert small.sampling.stop_on_repeat
    big = SimpleNamespace(
        name="Llama-3.1-8B-Instruct", model=SimpleNamespace(config=SimpleNamespace(hidden_size=4096))
    )
    assert profile_for(big) is not small
