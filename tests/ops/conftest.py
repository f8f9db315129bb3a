"""Fixtures for operations: a real store in a temp dir, the real embedder, the tiny Llama."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.assistant import Assistant
from core.config import Settings
from core.memory.store import Store, open_store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", max_new_tokens=6, temperature=0.0, ops_port=free_port(), _env_file=None
    )


@pytest.fixture
def store(settings: Settings, embedder) -> Iterator[Store]:
    store = open_store(settings, embedder=embedder, journal=True)
    yield store
    store.close()


@pytest.fixture
def assistant(settings: Settings, store: Store, tiny_model) -> Assistant:
    from core.llm.engine import Engine

    return Assistant(settings, store, Engine(tiny_model, settings))
