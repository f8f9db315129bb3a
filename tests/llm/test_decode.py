"""The lean decode step (core/llm/decode.py) against transformers' own forward.

Stated tolerance: in fp32 every decode step's logits match the transformers path within 1e-4
(they differ only by rounding order: fused matmuls, attention as two matmuls instead of SDPA),
and greedy output is identical. Rows are left-padded, join a running batch, carry per-row LoRA
adapters, and the model has GQA, llama3 rope scaling and an untied head.
"""

from __future__ import annotations

import asyncio
import copy

import pytest
import torch

from core.config import Settings
from core.llm.decode import LeanDecoder
from core.llm.engine import Engine, _Request
from core.llm.model import LoadedModel, tiny_llama, tiny_tokenizer
from core.llm.sampling import RowState, Sampling
from tests.llm.test_adapters import make_peft_adapter

PROMPTS = [
    "Hello, how are you today?",
    "What am I training for? I am training for the Berlin marathon and it is a long way.",
    "The quick brown fox",
]


def llama3_shaped(seed: int = 0, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """A tiny Llama-3.2-like model: GQA 4:1, llama3 rope scaling, untied head."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 128,
        },
        tie_word_embeddings=False,
        initializer_range=0.5,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(dtype).eval()
    return LoadedModel(model, tok, "llama3-tiny", frozenset({tok.eos_token_id}), 4096)


def decode_trace(loaded: LoadedModel, tmp_path, *, lean: bool, adapters=(), steps: int = 12, kernel=None):
    """Prefill the prompts one by one into a running batch, then decode; every step's logits.

    `kernel`: True waits for the engine's own GGUF block kernels (the bundled model); a GGUF path
    loads the blocks from that file (core/llm/blockq.py) into the lean step.
    """
    loaded = copy.copy(loaded)
    loaded.model = copy.deepcopy(loaded.model)
    path = "transformers" if not lean else "kernel" if kernel is True else "lean"
    engine = Engine(loaded, Settings(data_dir=tmp_path, temperature=0), decode=path)
    assert (engine._lean is not None) == lean
    if kernel is True:
        assert engine.wait_for_kernel(), "the bundled model decodes over its GGUF blocks"
    elif kernel is not None:
        from core.llm import blockq

        blocks = blockq.from_gguf(engine.model, kernel, blockq.load_kernel(tmp_path / "kernels"))
        assert blocks is not None, "the GGUF holds exactly the model's weights"
        engine._lean.use_blocks(blocks)
    for i, path in enumerate(adapters):
        engine.adapters.register(f"p{i}", path)
    loop = asyncio.new_event_loop()
    logits: list[torch.Tensor] = []
    real = engine._logits
    engine._logits = lambda hidden: logits.append(real(hidden).float()) or logits[-1]
    rows = []
    with torch.inference_mode():
        for i, text in enumerate(PROMPTS):
            ids = engine.encode_messages([{"role": "user", "content": text}])
            adapter = f"p{i}" if i < len(adapters) else None
            req = _Request(ids, 10_000, RowState(Sampling(temperature=0)), adapter, loop, asyncio.Queue())
            engine._prefill(req)
            rows.append(req)
            engine._step()  # the next row joins a batch that already decodes
        for _ in range(steps):
            engine._step()
    loop.close()
    return logits, [r.generated for r in rows]


def test_supports_plain_llama_shapes():
    assert LeanDecoder.supports(llama3_shaped().model)
    assert LeanDecoder.supports(tiny_llama().model)


def test_lean_decode_matches_transformers_in_a_left_padded_batch(tmp_path):
    loaded = llama3_shaped()
    ours, our_tokens = decode_trace(loaded, tmp_path / "a", lean=True)
    theirs, their_tokens = decode_trace(loaded, tmp_path / "b", lean=False)
    assert len(ours) == len(theirs) == len(PROMPTS) + 12
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert our_tokens == their_tokens
    assert len({tuple(t) for t in our_tokens}) == len(PROMPTS), "rows decode their own text"


def test_lean_decode_with_per_row_adapters_matches_transformers(tmp_path):
    loaded = llama3_shaped(seed=1)
    dirs = []
    for i in range(2):
        make_peft_adapter(loaded.model, tmp_path / f"a{i}", seed=10 + i)
        dirs.append(tmp_path / f"a{i}")
    ours, our_tokens = decode_trace(loaded, tmp_path / "a", lean=True, adapters=dirs)
    theirs, their_tokens = decode_trace(loaded, tmp_path / "b", lean=False, adapters=dirs)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert our_tokens == their_tokens
    plain, _ = decode_trace(loaded, tmp_path / "c", lean=True)
    assert not torch.allclose(plain[-1][0], ours[-1][0], atol=1e-3), "the adapter changes row 0"


def test_weights_are_held_once(tmp_path):
    loaded = llama3_shaped()
    before = sum(p.numel() for p in loaded.model.parameters())
    LeanDecoder(loaded.model)
    layer = loaded.model.model.layers[0]
    q, k = layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight
    assert q.untyped_storage().data_ptr() == k.untyped_storage().data_ptr()
    assert sum(p.numel() for p in loaded.model.parameters()) == before


@pytest.mark.slow
@pytest.mark.parametrize("kernel", [None, True], ids=["bf16-matmuls", "gguf-blocks"])
def test_bundled_model_bf16_greedy_text_matches_transformers(tmp_path, bundled_models_dir, kernel):
    """On the real bf16 weights the two paths round differently (attention scores round to bf16
    before the fp32 softmax; SDPA keeps them fp32), so greedy text agrees until a near-tie.
    Stated tolerance: first-step logits within 0.5 (4 bf16 steps at their magnitude, ~20) and
    each row's first 16 tokens identical. For scale: the same transformers path in bf16 against
    fp32 weights changes these rows' tokens at 0, 32 and 11; lean vs transformers at 44, 43, 19.
    The GGUF block kernels (the default) multiply the very same bf16 weights (checked at load)
    and only sum in another order, which moves a near-tie: against transformers they change
    these rows' tokens first at 11 (row 3; rows 1 and 2 agree for all 16), so for them the first
    10 tokens must agree.
    """
    from core.llm.model import load_model

    loaded = load_model(Settings(data_dir=tmp_path, model_cache_dir=bundled_models_dir))
    assert loaded.dtype == torch.bfloat16
    ours, our_tokens = decode_trace(loaded, tmp_path / "a", lean=True, steps=20, kernel=kernel)
    theirs, their_tokens = decode_trace(loaded, tmp_path / "b", lean=False, steps=20)
    torch.testing.assert_close(ours[0], theirs[0], rtol=0, atol=0.5)
    agree = 10 if kernel else 16
    assert [t[:agree] for t in our_tokens] == [t[:agree] for t in their_tokens]
