"""The worker opens its store the way the chat process does: the same factory, the same settings
(it used to ignore the search cache's size and load threshold)."""

from __future__ import annotations

from core.config import Settings
from core.memory.store import open_store


def _store_settings(store) -> tuple[int, int]:
    return store._hot.max_bytes, store._hot_sync_rows


def test_the_worker_store_gets_the_search_cache_settings(settings, embedder, monkeypatch):
    from workers import tasks
    from workers.app import app

    tuned = settings.model_copy(update={"search_cache_mb": 3, "search_cache_sync_rows": 17})
    monkeypatch.setattr(app, "confidante_settings", tuned)
    tasks.store.cache_clear()
    monkeypatch.setattr("core.memory.embed.default_embedder", lambda: embedder)  # loaded once per session
    try:
        worker_store = tasks.store()
        chat_store = open_store(tuned, embedder=embedder, journal=True)
        assert _store_settings(worker_store) == _store_settings(chat_store) == (3 * 2**20, 17)
        chat_store.close()
    finally:
        tasks.store.cache_clear()


def test_the_embedded_worker_process_is_started_with_them(settings, monkeypatch):
    """The embedded worker is a subprocess: its settings come from the environment it is given."""
    from workers.embedded import worker_env

    tuned = settings.model_copy(update={"search_cache_mb": 5, "search_cache_sync_rows": 23})
    for key, value in worker_env(tuned).items():
        monkeypatch.setenv(key, value)
    seen = Settings(_env_file=None)
    assert (seen.search_cache_mb, seen.search_cache_sync_rows, seen.data_dir) == (
        5,
        23,
        tuned.data_dir.resolve(),
    )
