"""A PEFT LoRA adapter as a GGUF adapter file, for llama.cpp's server (`--lora file.gguf`).

llama.cpp names an adapter's tensors after the base GGUF's (`blk.3.attn_q.weight`) with
`.lora_a` / `.lora_b` appended, and marks the file `general.type = adapter`,
`adapter.type = lora` with the LoRA alpha. Llama's GGUF stores q and k projections with their
rows permuted for its rotary layout, so B of q and k (the output side) is permuted the same way;
A is not. Only the `gguf` package is needed (a project dependency), not llama.cpp's scripts.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.llm.adapters import CONFIG, WEIGHTS, AdapterError, _module_name

_PROJECTIONS = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output"}


def _permute(weights, heads: int):
    """The row order convert_hf_to_gguf gives Llama's q/k weights (interleaved rotary halves)."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def gguf_tensor_name(module: str, which: str) -> str:
    """'model.layers.3.self_attn.q_proj', 'A' -> 'blk.3.attn_q.weight.lora_a'."""
    parts = module.split(".")
    if len(parts) != 5 or parts[:2] != ["model", "layers"] or parts[4] not in _PROJECTIONS:
        raise AdapterError(f"No GGUF name for adapter module {module!r} (only Llama attention projections).")
    return f"blk.{int(parts[2])}.{_PROJECTIONS[parts[4]]}.weight.lora_{which.lower()}"


def peft_to_gguf(adapter_dir: Path, out: Path, model_config: Path) -> None:
    """Write the adapter in `adapter_dir` to `out`; `model_config` is the base's config.json (its
    head counts decide the q/k permutation)."""
    import gguf
    from safetensors.torch import load_file

    config = json.loads((adapter_dir / CONFIG).read_text())
    base = json.loads(model_config.read_text())
    heads = int(base["num_attention_heads"])
    kv_heads = int(base.get("num_key_value_heads") or heads)
    writer = gguf.GGUFWriter(str(out), arch="llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config.get("lora_alpha", config.get("r", 8))))
    for key, tensor in sorted(load_file(str(adapter_dir / WEIGHTS)).items()):
        found = _module_name(key)
        if found is None:
            continue
        module, which = found
        data = tensor.float().numpy()
        if which == "B" and module.endswith("q_proj"):
            data = _permute(data, heads)
        elif which == "B" and module.endswith("k_proj"):
            data = _permute(data, kv_heads)
        writer.add_tensor(gguf_tensor_name(module, which), data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
