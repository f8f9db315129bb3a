"""The GGUF block kernels (core/llm/blockq.py): a tiny Llama whose weights are Q4_1/Q8_0 blocks
written to a real GGUF, the way the bundled model's are.

Stated tolerance: the blocks expand to the model's bf16 weights bit for bit (checked at load;
one changed weight turns the path off); a product differs from a bf16 matmul only by summation
order (bf16 output rounding, 1e-2 relative here); and greedy decoding over the blocks, with
per-row adapters in a mixed batch, gives the reference path's tokens.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from core.llm import blockq
from tests.llm.test_adapters import make_peft_adapter
from tests.llm.test_decode import PROMPTS, decode_trace, llama3_shaped

gguf = pytest.importorskip("gguf")
if not blockq.cpu_supported():  # the kernel is AVX-512; elsewhere the engine keeps bf16 matmuls
    pytest.skip("this CPU has no AVX-512F", allow_module_level=True)

Q4, Q8 = gguf.GGMLQuantizationType.Q4_1, gguf.GGMLQuantizationType.Q8_0


def quantized_llama(path, seed: int = 0):
    """A bf16 tiny Llama (GQA, untied head) whose projections are Q4_1 and head Q8_0 blocks, and
    the GGUF holding them: q/k rows in llama.cpp's interleaved RoPE order, like a converted model."""
    loaded = llama3_shaped(seed, dtype=torch.bfloat16)
    model, config = loaded.model, loaded.model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    for i, layer in enumerate(model.model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        for name, module, heads in (
            ("attn_q", attn.q_proj, config.num_attention_heads),
            ("attn_k", attn.k_proj, config.num_key_value_heads),
            ("attn_v", attn.v_proj, None),
            ("attn_output", attn.o_proj, None),
            ("ffn_gate", mlp.gate_proj, None),
            ("ffn_up", mlp.up_proj, None),
            ("ffn_down", mlp.down_proj, None),
        ):
            w = module.weight.detach().float().numpy()
            if heads:  # llama.cpp's permute for RoPE
                n = w.shape[0]
                w = w.reshape(heads, 2, n // heads // 2, -1).swapaxes(1, 2).reshape(w.shape)
            blocks = gguf.quants.quantize(w, Q4)
            writer.add_tensor(f"blk.{i}.{name}.weight", blocks, raw_dtype=Q4)
            dense = torch.from_numpy(gguf.quants.dequantize(blocks, Q4))
            if heads:
                dense = dense[blockq._rope_rows(dense.shape[0], heads)]
            module.weight.data = dense.to(torch.bfloat16)
    blocks = gguf.quants.quantize(model.lm_head.weight.detach().float().numpy(), Q8)
    writer.add_tensor("output.weight", blocks, raw_dtype=Q8)
    model.lm_head.weight.data = torch.from_numpy(gguf.quants.dequantize(blocks, Q8)).to(torch.bfloat16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return loaded


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return quantized_llama(path), path


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    built = blockq.load_kernel(tmp_path_factory.mktemp("kernels"))
    assert built is not None, "the kernel builds with the system C compiler"
    return built


def test_blocks_expand_to_the_weights_bit_for_bit(quantized, lib):
    loaded, path = quantized
    blocks = blockq.from_gguf(loaded.model, path, lib)
    assert blocks is not None and len(blocks) == 7 * 2 + 1
    assert blocks["lm_head.weight"].kind == blockq.Q8_0
    assert blocks["model.layers.1.self_attn.k_proj.weight"].shape == (32, 64)

    changed = copy.deepcopy(loaded.model)
    with torch.no_grad():
        changed.model.layers[1].mlp.down_proj.weight[3, 5] += 0.25
    assert blockq.from_gguf(changed, path, lib) is None, "one changed weight: no block path"
    assert blockq.from_gguf(changed.float(), path, lib) is None, "float32 models keep their matmuls"


@pytest.mark.parametrize("rows", [1, 3, 9])
def test_block_products_equal_bf16_matmuls(quantized, lib, rows):
    loaded, path = quantized
    blocks = blockq.from_gguf(loaded.model, path, lib)
    torch.manual_seed(rows)
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight"):
        weight = loaded.model.get_submodule(name.removesuffix(".weight")).weight
        x = torch.randn(rows, weight.shape[1]).to(torch.bfloat16)
        exact = x.float() @ weight.float().T
        torch.testing.assert_close(blocks[name](x).float(), exact, rtol=1e-2, atol=1e-2)
        torch.testing.assert_close(F.linear(x, weight).float(), exact, rtol=1e-2, atol=1e-2)
        assert blocks[name](x).dtype == torch.bfloat16
        torch.testing.assert_close(blocks[name](x.float()), exact, rtol=1e-5, atol=1e-5)
    head = blocks["lm_head.weight"]
    x = torch.randn(rows, 64).to(torch.bfloat16)
    torch.testing.assert_close(
        head(x).float(), x.float() @ loaded.model.lm_head.weight.float().T, rtol=1e-2, atol=1e-2
    )
    with pytest.raises(ValueError, match="rows, 64"):
        head(torch.randn(rows, 63))


def test_kernel_decode_gives_the_reference_tokens_in_a_mixed_batch(quantized, tmp_path):
    """Rows joining a running batch, decoded over the blocks: transformers' own forward's tokens
    without adapters; with two people's adapters and one row without, the tokens of the same
    lean step on the bf16 weights (the blocks change nothing but the matmuls' summation order).

    Why not transformers' tokens with adapters: in bf16 the lean step's attention rounds its
    scores before the fp32 softmax, and these random adapters (3x PEFT's init, on weights of
    scale 0.5) amplify that into a different token after 4-7 steps; in fp32 the lean step
    matches transformers with adapters (tests/llm/test_decode.py)."""
    loaded, path = quantized
    ours, our_tokens = decode_trace(loaded, tmp_path / "k", lean=True, kernel=path)
    theirs, their_tokens = decode_trace(loaded, tmp_path / "t", lean=False)
    assert our_tokens == their_tokens
    assert len({tuple(t) for t in our_tokens}) == len(PROMPTS), "rows decode their own text"
    for a, b in zip(ours, theirs, strict=True):  # bf16 logits of magnitude ~12: a few bf16 steps
        torch.testing.assert_close(a, b, rtol=0, atol=1.25)

    dirs = []
    for i in range(2):
        make_peft_adapter(loaded.model, tmp_path / f"a{i}", seed=20 + i)
        dirs.append(tmp_path / f"a{i}")
    mixed, mixed_tokens = decode_trace(loaded, tmp_path / "km", lean=True, adapters=dirs, kernel=path)
    bf16, bf16_tokens = decode_trace(loaded, tmp_path / "lm", lean=True, adapters=dirs)
    assert mixed_tokens == bf16_tokens
    for a, b in zip(mixed, bf16, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0.25)
    assert mixed_tokens[0] != our_tokens[0], "the adapter changes row 0's reply"
    assert mixed_tokens[2] == our_tokens[2], "the row without an adapter is the base model's"
    reference, _ = decode_trace(loaded, tmp_path / "tm", lean=False, adapters=dirs)
    torch.testing.assert_close(mixed[0], reference[0], rtol=0, atol=0.25)  # first token: no drift yet


def test_gguf_reader_reads_what_gguf_wrote(quantized):
    _, path = quantized
    tensors = blockq.read_gguf_tensors(path)
    kind, shape, raw = tensors["blk.0.ffn_down.weight"]
    assert kind == blockq.Q4_1 and shape == (96, 64)  # ggml lists (k, n)
    reference = gguf.GGUFReader(str(path)).get_tensor(6 + 0)  # the 7th tensor written
    assert reference.name == "blk.0.ffn_down.weight"
    assert np.array_equal(np.asarray(reference.data).reshape(-1), np.asarray(raw))


def test_without_a_working_compiler_nothing_is_built(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "false")  # a "compiler" that fails
    monkeypatch.setattr(blockq.shutil, "which", lambda name: "/bin/false" if name == "false" else None)
    assert blockq.build_kernel(tmp_path) is None
    assert blockq.load_kernel(tmp_path) is None
    assert not list(tmp_path.iterdir()), "no half-written library is left"
    monkeypatch.setattr(blockq.shutil, "which", lambda name: None)
    assert blockq.build_kernel(tmp_path) is None


async def test_engine_on_a_model_without_gguf_blocks_uses_transformers_forward(tmp_path):
    from core.config import Settings
    from core.llm.engine import Engine
    from core.llm.model import tiny_llama

    engine = Engine(tiny_llama(), Settings(data_dir=tmp_path, temperature=0), decode="kernel")
    try:
        assert engine._lean is None and not engine.wait_for_kernel(timeout=1)
        reply = await engine.generate([{"role": "user", "content": "Hello"}], max_new_tokens=4)
        assert engine.stats.tokens >= 1 and isinstance(reply, str)
    finally:
        engine.close()


async def test_when_the_kernel_cannot_be_built_the_engine_falls_back_to_transformers_forward(
    quantized, tmp_path, monkeypatch
):
    from core.config import Settings
    from core.llm.engine import Engine

    monkeypatch.setattr(blockq, "load_kernel", lambda directory: None)  # no compiler, say
    loaded, _ = quantized
    engine = Engine(loaded, Settings(data_dir=tmp_path, temperature=0), decode="kernel")
    try:
        assert not engine.wait_for_kernel(timeout=30)
        first = await engine.generate([{"role": "user", "content": "Hello"}], max_new_tokens=4)
        second = await engine.generate([{"role": "user", "content": "Hello"}], max_new_tokens=4)
        assert engine._lean is None, "the lean step on bf16 weights is dropped once its batch is done"
        assert first == second
    finally:
        engine.close()
