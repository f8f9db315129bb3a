"""Opening the database: the table handles, the in-memory people/accounts/chats, the journal's
writer and the search cache every part of the store shares."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb
import pyarrow as pa

from core.memory.embed import Embedder
from core.memory.hot import SearchCache
from core.memory.records import Person, PersonSettings
from core.memory.store import lance
from core.memory.store.schema import (
    SCHEMAS,
    SEARCH_CACHE_BYTES,
    SEARCH_CACHE_SYNC_ROWS,
    ChatSettings,
    _utc,
)
from core.memory.writer import TurnWriter


class StoreBase:
    """All of Confidante's durable state, in one LanceDB database (a folder or an s3:// URI)."""

    def __init__(
        self,
        uri: str | Path,
        embedder: Embedder,
        *,
        read_consistency_interval: timedelta | None = timedelta(seconds=1),
        journal: Path | None = None,
        search_cache_bytes: int = SEARCH_CACHE_BYTES,
        search_cache_sync_rows: int = SEARCH_CACHE_SYNC_ROWS,
    ) -> None:
        self.uri = str(uri)
        self.embedder = embedder
        # Workers write memories and profiles from other processes: without a consistency
        # interval a LanceDB handle never sees another process's commits.
        self.db = lancedb.connect(self.uri, read_consistency_interval=read_consistency_interval)
        self._tables = {name: self._open(name, schema) for name, schema in SCHEMAS.items()}
        # The same tables' async handles (one object with the sync ones, so they see every write
        # at once): recall sends all its searches in one batch on LanceDB's event loop.
        self._async = {name: lance.async_handle(table) for name, table in self._tables.items()}
        self._write_lock = threading.RLock()
        self._people: dict[str, Person] = {}
        self._identities: dict[tuple[str, str], str] = {}
        self._chats: dict[tuple[str, str], ChatSettings] = {}
        self._row_counts: dict[tuple[str, str], int] = {}
        self._writes: dict[str, int] = dict.fromkeys(SCHEMAS, 0)
        self._compacting = threading.Lock()
        self._fts_ready: set[str] = set()
        # recall's searches for people who talk now, in memory (0 bytes: always LanceDB)
        self._hot = SearchCache(search_cache_bytes) if search_cache_bytes > 0 else None
        self._hot_sync_rows = search_cache_sync_rows
        self._loading: set[str] = set()
        self._load_small_tables()
        self._journal_path = journal
        self._writer: TurnWriter | None = self._open_writer(journal) if journal is not None else None

    # -- plumbing -------------------------------------------------------------------------

    def _open(self, name: str, schema: pa.Schema) -> Any:
        return self.db.create_table(name, schema=schema, exist_ok=True)

    def table(self, name: str) -> Any:
        return self._tables[name]

    def _rows(
        self, name: str, where: str, columns: list[str] | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Rows matching a filter. Through the async handle: the sync query builder costs a few
        round trips to LanceDB's event loop per query (schema look-ups), this one a single one."""
        query = self._async[name].query().where(where)
        if columns:
            query = query.select(columns)
        # LanceDB applies a default limit to queries; lift it unless the caller set one.
        query = query.limit(limit if limit is not None else 10_000_000)
        return lance.run(query.to_arrow()).to_pylist()

    def _load_small_tables(self) -> None:
        """People and accounts are few and read on every message: keep them in memory. Built
        aside and swapped in at once, so a re-read (catch_up) never shows a half-filled map."""
        people = {
            row["person_id"]: self._person_from_row(row)
            for row in self._tables["people"].to_arrow().to_pylist()
        }
        identities = {
            (row["platform"], row["platform_user_id"]): row["person_id"]
            for row in self._tables["identities"].to_arrow().to_pylist()
        }
        chats = {
            (row["platform"], row["chat_id"]): ChatSettings(row["record_context"], row["active"])
            for row in self._tables["chats"].to_arrow().to_pylist()
        }
        self._people, self._identities, self._chats = people, identities, chats

    def catch_up(self) -> None:
        """See what other processes committed now, not after the read consistency interval,
        and re-read people, accounts and chats (several chat processes share the store)."""

        async def latest() -> None:
            await asyncio.gather(*(t.checkout_latest() for t in self._async.values()))

        lance.run(latest())
        self._load_small_tables()

    @staticmethod
    def _person_from_row(row: dict[str, Any]) -> Person:
        return Person(
            person_id=row["person_id"],
            display_name=row["display_name"] or "",
            settings=PersonSettings.from_json(row["settings"]),
            adapter_version=row["adapter_version"] or "",
            profile=row["profile"] or "",
            created_at=_utc(row["created_at"]),
        )

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [v.tolist() for v in self.embedder.embed(texts)]
