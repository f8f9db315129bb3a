"""Bigger Llama-family checkpoints through the same path as the bundled model.

The test builds a random-weight checkpoint with the family features of Llama-3.2-1B-Instruct
(GQA 4:1, rope_scaling llama3 to 128k, untied head, a Llama-3 style chat template ending turns
with <|eot_id|>), shrunk in depth and width so it runs in seconds. Config and tokenizer start
from the bundled model's, as a downloaded checkpoint directory would hold them. It loads via
CONFIDANTE_MODEL=<dir>, chats through the engine, and trains an adapter that serves on this base
and is refused on another.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from core.config import Settings
from core.llm.engine import Engine
from core.llm.model import bundled_cache_dir, load_model, tiny_llama
from core.memory.records import Memory, Person

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello, how are you today?"}]


def llama3_checkpoint(target: Path, bundled_models_dir: Path, *, seed: int) -> Path:
    """Save a 1B-family-shaped random checkpoint (shrunk: 2 layers, width 128) to `target`."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    bundled = bundled_cache_dir(Settings(model_cache_dir=bundled_models_dir))
    if not bundled.exists():
        load_model(Settings(model_cache_dir=bundled_models_dir))  # converts once per machine
    tok = AutoTokenizer.from_pretrained(bundled)
    tok.add_special_tokens(
        {
            "additional_special_tokens": [
                "<|begin_of_text|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eot_id|>",
            ]
        }
    )
    tok.bos_token, tok.eos_token, tok.pad_token = "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>"
    tok.chat_template = LLAMA3_TEMPLATE
    config = json.loads((bundled / "config.json").read_text())
    config.pop("rope_parameters", None)
    config.update(  # Llama-3.2-1B-Instruct's config.json, narrower and shallower
        hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=131072, rms_norm_eps=1e-5,
        rope_theta=500000.0, tie_word_embeddings=False, vocab_size=len(tok),
        rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                      "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        initializer_range=0.5,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig.from_dict(config)).to(torch.bfloat16)
    model.save_pretrained(target)
    tok.save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, bundled_models_dir) -> Path:
    return llama3_checkpoint(tmp_path_factory.mktemp("llama3") / "m", bundled_models_dir, seed=0)


def test_loads_from_its_directory_with_its_template_and_context(checkpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("CONFIDANTE_MODEL", str(checkpoint))
    monkeypatch.setenv("CONFIDANTE_CONTEXT_TOKENS", "200000")
    loaded = load_model(Settings(data_dir=tmp_path, _env_file=None))
    config = loaded.model.config
    assert config.num_key_value_heads * 4 == config.num_attention_heads
    assert config.rope_parameters["rope_type"] == "llama3"
    assert loaded.model.lm_head.weight.data_ptr() != loaded.model.model.embed_tokens.weight.data_ptr()
    assert loaded.context_length == 131072, "the model's own context, the setting being larger"
    eot = loaded.tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert eot in loaded.eos_token_ids

    monkeypatch.setenv("CONFIDANTE_CONTEXT_TOKENS", "4096")
    assert load_model(Settings(data_dir=tmp_path, _env_file=None)).context_length == 4096


async def test_chats_through_the_engine_with_its_own_template(checkpoint, tmp_path):
    settings = Settings(data_dir=tmp_path, model=str(checkpoint), temperature=0, _env_file=None)
    loaded = load_model(settings)
    engine = Engine(loaded, settings, decode="lean")
    try:
        prompt = engine.render(HELLO)
        assert prompt.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>")
        assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
        assert engine._lean is not None, "the lean decode step covers this shape"
        replies = [await engine.generate(HELLO, max_new_tokens=8) for _ in range(2)]
        assert engine.stats.tokens >= 2 and replies[0] == replies[1]
    finally:
        engine.close()


async def test_adapter_trains_for_this_base_and_is_refused_for_another(
    checkpoint, tmp_path, bundled_models_dir
):
    from core.memory.embed import default_embedder
    from core.memory.store import Store
    from workers.training import refresh_adapter

    settings = Settings(
        data_dir=tmp_path / "data", model=str(checkpoint), temperature=0, persona="Be brief.",
        adapter_train_epochs=1, adapter_min_steps=2, adapter_max_steps=3, adapter_min_replay=8,
        adapter_min_new_items=1, adapter_train_threads=1, _env_file=None,
    )  # fmt: skip
    settings.ensure_data_dir()
    store = Store(settings.data_dir / "lancedb", default_embedder())
    store.save_person(Person("dana", "Dana"))
    store.save_memories(
        [
            Memory("dana", "fact", "I'm training for the Berlin marathon.", "m1"),
            Memory("dana", "fact", "My dog is called Biscuit.", "m2"),
        ]
    )
    loaded = load_model(settings.model_copy(update={"dtype": "float32"}))
    result = refresh_adapter("dana", store, settings, force=True, loaded=loaded)
    assert result.status in {"promoted", "rejected"}, result.reason
    version = next(v for v in store_versions(settings) if v.version == result.version)
    assert version.meta["base_fingerprint"] == loaded.fingerprint
    assert version.meta["base_model"] == checkpoint.name

    served = load_model(settings)  # bf16 serving: the same base, the same fingerprint
    engine = Engine(served, settings)
    engine.adapters.register("dana", version.path)
    other_ckpt = llama3_checkpoint(tmp_path / "other", bundled_models_dir, seed=1)
    other = Engine(load_model(settings.model_copy(update={"model": str(other_ckpt)})), settings)
    bundled_shape = Engine(tiny_llama(), settings)
    no_meta = tmp_path / "no-meta"
    shutil.copytree(version.path, no_meta)
    (no_meta / "meta.json").unlink()
    try:
        assert engine.adapters.acquire("dana") > 0
        plain = await engine.generate(HELLO, max_new_tokens=6)
        assert isinstance(await engine.generate(HELLO, adapter="dana", max_new_tokens=6), str)
        assert isinstance(plain, str)

        other.adapters.register("dana", version.path)
        assert other.adapters.acquire("dana") == -1, "same shapes, other weights: refused"
        bundled_shape.adapters.register("dana", no_meta)
        assert bundled_shape.adapters.acquire("dana") == -1, "other shapes: refused"
        # refused adapters leave the person on the base model, not on an error
        assert isinstance(await other.generate(HELLO, adapter="dana", max_new_tokens=4), str)
    finally:
        for e in (engine, other, bundled_shape):
            e.close()


def store_versions(settings: Settings):
    from core.llm.adapters import AdapterStore

    return AdapterStore(settings).versions("dana")
