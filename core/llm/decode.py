"""A lean decode step for Llama-family models: one new token per row, over the model's own weights.

Profiled on the bundled SmolLM2-135M (30 layers, 2 CPU threads), transformers' forward spent a
decode step on three things besides the weight traffic it cannot avoid: SDPA's CPU kernel for a
single query (0.2-1.4 ms per layer, more than all the layer's matmuls, and growing with the
context), ~40 small ops per layer of module and cache bookkeeping, and separate q/k/v and
gate/up matmuls. This step runs the same math with fused q|k|v and gate|up matmuls, attention as
two small matmuls with an fp32 softmax, RoPE applied to q and k at once, and keys/values written
straight into the engine's preallocated slabs. Prefill still runs the transformers model (long
inputs are matmul-bound there, and SDPA is good at them).

The fused matrices are new, aligned tensors, and the model's own projections are re-pointed at
row slices of them, so the weights are held once. Per-row LoRA deltas come from the adapter
registry's wrapped projections (core/llm/adapters.py), unchanged.

Numerics: same dtypes as transformers (bf16 or fp32 matmuls, fp32 norms and softmax); results
differ only by rounding order (see tests/llm/test_decode.py for the stated tolerance).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from core.llm.blockq import BlockMatrix

# rope types whose inverse frequencies are fixed at load time (dynamic ones change per length)
_STATIC_ROPE = {"default", "llama3", "linear"}


@dataclass
class _Layer:
    attn: nn.Module
    qkv: torch.Tensor
    o: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor
    norm_in: torch.Tensor
    norm_post: torch.Tensor
    # the same matrices as GGUF blocks (core/llm/blockq.py), when `use_blocks` found them
    blocks: tuple[BlockMatrix, BlockMatrix, BlockMatrix, BlockMatrix] | None = None

    def matmuls(self) -> tuple[Callable[[torch.Tensor], torch.Tensor], ...]:
        """x -> x @ W.T for q|k|v, o, gate|up and down: block kernels, or bf16 matmuls."""
        if self.blocks is not None:
            return self.blocks
        return tuple(
            functools.partial(F.linear, weight=w) for w in (self.qkv, self.o, self.gate_up, self.down)
        )


class LeanDecoder:
    """Decode steps for a batch of left-padded rows whose KV lives in the engine's slab cache."""

    def __init__(self, model: nn.Module) -> None:
        config = model.config
        inner = model.model
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.hidden = config.hidden_size
        self.inter = config.intermediate_size
        self.eps = float(config.rms_norm_eps)
        self.scale = self.head_dim**-0.5
        self.embed = inner.embed_tokens.weight
        self.final_norm = inner.norm.weight
        rotary = inner.rotary_emb
        self.inv_freq = rotary.inv_freq.float()
        self.rope_scaling = float(getattr(rotary, "attention_scaling", 1.0))
        self.layers = [self._fuse(layer) for layer in inner.layers]
        self._matmuls = [layer.matmuls() for layer in self.layers]
        self.head: Callable[[torch.Tensor], torch.Tensor] | None = None  # the output head as blocks

    def use_blocks(self, blocks: dict[str, BlockMatrix], *, threads: int = 0) -> None:
        """Run the projections and the head over GGUF blocks (core/llm/blockq.from_gguf's result,
        keyed by parameter name), which expand to exactly the weights used now. `threads`: the
        kernels' own thread count (0: torch's setting at each call)."""
        fused = []
        for i in range(len(self.layers)):
            p = f"model.layers.{i}."
            attn, mlp = p + "self_attn.", p + "mlp."
            fused.append(
                (
                    BlockMatrix.cat([blocks[attn + n + ".weight"] for n in ("q_proj", "k_proj", "v_proj")]),
                    blocks[attn + "o_proj.weight"],
                    BlockMatrix.cat([blocks[mlp + "gate_proj.weight"], blocks[mlp + "up_proj.weight"]]),
                    blocks[mlp + "down_proj.weight"],
                )
            )
        for layer, four in zip(self.layers, fused, strict=True):
            for block in four:
                block.threads = threads
            layer.blocks = four
        self._matmuls = [layer.matmuls() for layer in self.layers]
        self.head = blocks["lm_head.weight"]
        self.head.threads = threads

    @staticmethod
    def supports(model: Any) -> bool:
        """Whether `model` is a plain Llama-shaped decoder this step computes exactly."""
        config = getattr(model, "config", None)
        inner = getattr(model, "model", None)
        if config is None or inner is None or getattr(config, "hidden_act", None) != "silu":
            return False
        if getattr(config, "pretraining_tp", 1) != 1 or getattr(config, "attention_bias", False):
            return False
        if getattr(config, "mlp_bias", False) or getattr(config, "sliding_window", None):
            return False
        rotary = getattr(inner, "rotary_emb", None)
        if rotary is None or getattr(rotary, "rope_type", "default") not in _STATIC_ROPE:
            return False
        try:
            for layer in inner.layers:
                for proj in (*_attn_projs(layer.self_attn), *_mlp_projs(layer.mlp)):
                    if proj.bias is not None:
                        return False
                if not hasattr(layer.input_layernorm, "variance_epsilon"):
                    return False
        except AttributeError:
            return False
        return True

    def _fuse(self, layer: nn.Module) -> _Layer:
        attn, mlp = layer.self_attn, layer.mlp
        qkv = _fused([p.weight for p in _attn_projs(attn)[:3]])
        gate_up = _fused([mlp.gate_proj.weight, mlp.up_proj.weight])
        # the model's projections read row slices of the fused matrices: one copy of the weights
        offset = 0
        for proj in _attn_projs(attn)[:3]:
            rows = proj.weight.shape[0]
            proj.weight.data = qkv[offset : offset + rows]
            offset += rows
        mlp.gate_proj.weight.data = gate_up[: self.inter]
        mlp.up_proj.weight.data = gate_up[self.inter :]
        return _Layer(
            attn=attn,
            qkv=qkv,
            o=_base(attn.o_proj).weight,
            gate_up=gate_up,
            down=mlp.down_proj.weight,
            norm_in=layer.input_layernorm.weight,
            norm_post=layer.post_attention_layernorm.weight,
        )

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return weight * F.rms_norm(x.float(), (self.hidden,), eps=self.eps).to(x.dtype)

    def step(
        self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache: Any, *, lora: bool
    ) -> torch.Tensor:
        """Last-layer hidden states (rows, hidden) for one new token per row.

        `tokens` (rows,), `positions` (rows,) each row's position id, `mask` (rows, keys) with the
        new token's column included, `cache` the engine's slab cache (each layer's keys/values are
        appended in place). `lora`: the rows have adapters, so the wrapped projections add them.
        """
        rows = tokens.shape[0]
        nq, nkv, d = self.heads, self.kv_heads, self.head_dim
        group = nq // nkv
        x = F.embedding(tokens, self.embed)
        dtype = x.dtype
        # RoPE as transformers computes it (fp32 angles, cast to the model dtype), with the sign
        # of rotate_half folded into sin so one roll does the rotation for q and k together
        freqs = positions[:, None].float() * self.inv_freq
        cos = (torch.cat((freqs, freqs), dim=-1).cos() * self.rope_scaling).to(dtype)[:, None, :]
        sin_half = freqs.sin() * self.rope_scaling
        sin = torch.cat((-sin_half, sin_half), dim=-1).to(dtype)[:, None, :]
        bias = torch.zeros(mask.shape, dtype=torch.float32, device=x.device)
        bias.masked_fill_(mask == 0, float("-inf"))
        bias = bias[:, None, None, :]
        k_end = (nq + nkv) * d
        for layer, (qkv_mm, o_mm, gate_up_mm, down_mm), slab in zip(
            self.layers, self._matmuls, cache.layers, strict=True
        ):
            h = self._norm(x, layer.norm_in)
            qkv = qkv_mm(h)
            if lora:
                qkv = qkv + _lora_qkv(layer.attn, h)
            qk = qkv[:, :k_end].view(rows, nq + nkv, d)
            qk = qk * cos + qk.roll(d // 2, dims=-1) * sin
            q = qk[:, :nq].reshape(rows, nkv, group, d)
            k = qk[:, nq:].view(rows, nkv, 1, d)
            v = qkv[:, k_end:].view(rows, nkv, 1, d)
            keys, values = slab.update(k, v)
            scores = torch.matmul(q, keys.transpose(-1, -2)).float() * self.scale + bias
            probs = torch.softmax(scores, dim=-1).to(dtype)
            attn = torch.matmul(probs, values).view(rows, nq * d)
            out = o_mm(attn)
            if lora:
                delta = _lora_delta(layer.attn.o_proj, attn)
                if delta is not None:
                    out = out + delta
            x = x + out
            h = self._norm(x, layer.norm_post)
            gate, up = gate_up_mm(h).split(self.inter, dim=-1)
            x = x + down_mm(F.silu(gate) * up)
        return self._norm(x, self.final_norm)


def _attn_projs(attn: nn.Module) -> tuple[nn.Linear, ...]:
    return tuple(_base(getattr(attn, n)) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))


def _mlp_projs(mlp: nn.Module) -> tuple[nn.Linear, ...]:
    return (mlp.gate_proj, mlp.up_proj, mlp.down_proj)


def _base(module: nn.Module) -> nn.Linear:
    """The plain Linear under an adapter wrapper (core/llm/adapters.BatchedLoRALinear)."""
    return getattr(module, "base", module)


def _fused(weights: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([w.detach() for w in weights], dim=0).contiguous()


def _lora_delta(module: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    delta = getattr(module, "lora_delta", None)
    if delta is None:
        return None
    out = delta(x[:, None, :])
    return None if out is None else out[:, 0, :]


def _lora_qkv(attn: nn.Module, h: torch.Tensor) -> torch.Tensor:
    parts = []
    for name in ("q_proj", "k_proj", "v_proj"):
        module = getattr(attn, name)
        delta = _lora_delta(module, h)
        if delta is None:
            delta = h.new_zeros((h.shape[0], _base(module).weight.shape[0]))
        parts.append(delta)
    return torch.cat(parts, dim=-1)
