"""Shared fixtures. Keep this file small: fixtures that only one area needs live next to its tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model():
    """A tiny random Llama with a real ChatML tokenizer (core.llm.model.tiny_llama); built once."""
    from core.llm.model import tiny_llama

    return tiny_llama()
