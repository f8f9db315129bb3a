"""Fixtures for the core: real LanceDB files in a temp dir, the real embedder, a tiny Llama."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.assistant import Assistant
from core.config import Settings
from core.memory.store import Store, open_store
from tests.helpers import RecordingEngine


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", max_new_tokens=8, temperature=0.0, _env_file=None)


@pytest.fixture
def store(settings: Settings, embedder) -> Iterator[Store]:
    """The chat process's store (`open_store`): turns are journaled and written in the background."""
    store = open_store(settings, embedder=embedder, journal=True)
    yield store
    store.close()


@pytest.fixture
def engine(tiny_model, settings: Settings) -> RecordingEngine:
    from core.llm.engine import Engine

    return RecordingEngine(Engine(tiny_model, settings))


@pytest.fixture
def assistant(settings: Settings, store: Store, engine: RecordingEngine) -> Assistant:
    return Assistant(settings, store, engine)
