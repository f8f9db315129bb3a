"""The one way a process opens the store from its settings: the chat process, every CLI command
and the workers call `open_store`, so none of them drops a setting (the search cache's size and
load threshold, the data dir's layout) that the others honour."""

from __future__ import annotations

from pathlib import Path

from core.config import Settings
from core.memory.embed import Embedder


def journal_path(settings: Settings) -> Path:
    return settings.data_dir / "journal" / "turns.jsonl"


def open_store(settings: Settings, *, embedder: Embedder | None = None, journal: bool = False):
    """LanceDB at `settings.store_location` (the data dir's `lancedb` folder unless
    CONFIDANTE_STORE_URI names another), with the configured search cache.

    `journal`: the chat process's store, which records turns off the reply path through the
    journal (one process owns it; close the store when the process stops). One-shot commands and
    workers leave it to that process. `embedder`: the bundled one unless given (tests pass theirs).
    """
    from core.memory.store import Store

    if embedder is None:
        from core.memory.embed import default_embedder

        embedder = default_embedder()
    settings.ensure_data_dir()
    return Store(
        settings.store_location,
        embedder,
        journal=journal_path(settings) if journal else None,
        search_cache_bytes=settings.search_cache_mb * 2**20,
        search_cache_sync_rows=settings.search_cache_sync_rows,
    )
