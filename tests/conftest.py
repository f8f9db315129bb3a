"""Shared fixtures. Keep this file small: fixtures that only one area needs live next to its tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Adapter training after each consolidation takes minutes of CPU; the training tests call it
# directly instead (worker subprocesses inherit this).
os.environ.setdefault("CONFIDANTE_ADAPTER_AUTO_REFRESH", "0")


@pytest.fixture(scope="session")
def tiny_model():
    """A tiny random Llama with a real ChatML tokenizer (core.llm.model.tiny_llama); built once."""
    from core.llm.model import tiny_llama

    return tiny_llama()


@pytest.fixture(scope="session")
def embedder():
    """The store's embedder (MiniLM, int8 ONNX), loaded once for the whole run."""
    from core.memory.embed import default_embedder

    return default_embedder()


@pytest.fixture(scope="session")
def bundled_models_dir() -> Path:
    """Where the bundled model's converted copy lives for tests: the same cache `make run` uses,
    so the ~20 s conversion happens once per machine, not once per test."""
    path = Path(__file__).resolve().parents[1] / "data" / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path
