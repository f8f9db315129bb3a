"""PEFT adapters as llama.cpp GGUF adapter files: names, shapes, metadata, the q/k permutation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.llm.adapters import plain_copy
from core.llm.lora_gguf import _permute, gguf_tensor_name, peft_to_gguf


@pytest.fixture(scope="module")
def adapter_dir(tiny_model, tmp_path_factory):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(5)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    path = tmp_path_factory.mktemp("gguf") / "adapter"
    get_peft_model(plain_copy(tiny_model.model), config).save_pretrained(path)
    return path


def test_an_adapter_becomes_a_llama_cpp_lora_gguf(tiny_model, adapter_dir, tmp_path):
    import gguf
    from safetensors.torch import load_file

    config_json = tmp_path / "config.json"
    config_json.write_text(json.dumps(tiny_model.model.config.to_dict()))
    out = tmp_path / "a.gguf"
    peft_to_gguf(adapter_dir, out, config_json)

    reader = gguf.GGUFReader(str(out))
    fields = {name: f.contents() for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["adapter.lora.alpha"] == 8.0
    tensors = {t.name: np.array(t.data).reshape([int(d) for d in reversed(t.shape)]) for t in reader.tensors}
    layers = tiny_model.model.config.num_hidden_layers
    assert len(tensors) == layers * 4 * 2
    peft = load_file(str(adapter_dir / "adapter_model.safetensors"))
    prefix = "base_model.model.model.layers.0.self_attn"
    q_b = peft[f"{prefix}.q_proj.lora_B.weight"].numpy()
    heads = tiny_model.model.config.num_attention_heads
    assert np.allclose(tensors["blk.0.attn_q.weight.lora_b"], _permute(q_b, heads))
    assert not np.allclose(tensors["blk.0.attn_q.weight.lora_b"], q_b)  # the permutation did something
    assert np.allclose(tensors["blk.0.attn_v.weight.lora_b"], peft[f"{prefix}.v_proj.lora_B.weight"].numpy())
    assert np.allclose(tensors["blk.0.attn_q.weight.lora_a"], peft[f"{prefix}.q_proj.lora_A.weight"].numpy())


def test_modules_without_a_gguf_name_are_refused():
    from core.llm.adapters import AdapterError

    assert gguf_tensor_name("model.layers.12.self_attn.o_proj", "B") == "blk.12.attn_output.weight.lora_b"
    with pytest.raises(AdapterError):
        gguf_tensor_name("model.layers.0.mlp.up_proj", "A")
