"""Keeping the search cache (core/memory/hot.py) in step with LanceDB: loading a person,
logging what this process added, and re-reading what other processes changed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import structlog

from core.memory import filters as f
from core.memory.embed import DIM
from core.memory.hot import TABLES, Entry, Rows, terms_of, unit
from core.memory.records import Memory, Turn
from core.memory.store import lance
from core.memory.store.base import StoreBase
from core.memory.store.schema import (
    _COLUMNS,
    _META,
    SEARCH_ATTEMPTS,
    VERIFY_FETCH_ROWS,
    Hit,
    Search,
    _memory,
    _turn,
    _vectors,
)

log = structlog.get_logger(__name__)


class CacheSync(StoreBase):
    # -- the search cache (core/memory/hot.py) ---------------------------------------------------

    def _log_added(self, name: str, version: int | None, data: pa.Table) -> None:
        """This process appended `data` (with vectors) at `version`: entries replay it."""
        if self._hot is None:
            return

        def add(entry: Entry) -> bool:
            mine = data.filter(pc.equal(data["person_id"], entry.person_id))
            if mine.num_rows:
                entry.parts[name].add(mine.drop_columns(["vector"]), _vectors(mine))
            return True

        self._hot.record(name, version, add)

    def _versions(self) -> dict[str, int]:
        """The current version of turns and memories (a cheap look at the handle's state)."""

        async def both() -> list[int]:
            return list(await asyncio.gather(*(self._async[t].version() for t in TABLES)))

        return dict(zip(TABLES, lance.run(both()), strict=True))

    def _hot_search(
        self, person_id: str, visibilities: list[str], searches: Sequence[Search]
    ) -> list[list[Hit]] | None:
        """The lists from the person's cache entry, brought up to the tables' current versions
        first; None when the person is not held (yet): LanceDB answers then."""
        return self._with_entry(person_id, lambda entry: self._search_entry(entry, visibilities, searches))

    def _with_entry(self, person_id: str, read: Callable[[Entry], Any]) -> Any:
        """`read` of the person's cache entry once it is current (under the cache's lock, so no
        write changes it meanwhile); None when the person is not held (yet)."""
        hot = self._hot
        assert hot is not None
        entry = hot.get(person_id) or self._hot_load(person_id)
        if entry is None:
            return None
        for _ in range(SEARCH_ATTEMPTS):
            stale = hot.catch_up(entry, self._versions())
            if not stale:
                with hot.lock:
                    if hot.get(person_id) is not entry:  # dropped meanwhile (forgotten, evicted)
                        return None
                    return read(entry)
            for table in stale:
                self._sync(entry, table)
        return None

    def _hot_load(self, person_id: str) -> Entry | None:
        """Load a person now if they are small, else in the background (None: not held yet)."""
        assert self._hot is not None
        if lance.run(self._person_rows("turns", person_id)) > self._hot_sync_rows:
            self._load_later(person_id)
            return None
        entry = self._load_entry(person_id)
        return entry if self._hot.put(entry) else None

    def _load_later(self, person_id: str) -> None:
        with self._hot.lock:  # type: ignore[union-attr]
            if person_id in self._loading:
                return
            self._loading.add(person_id)

        def load() -> None:
            try:
                entry = self._load_entry(person_id)
                for part in entry.parts.values():
                    part.text.prepare()
                self._hot.put(entry)  # type: ignore[union-attr]
            except Exception as exc:  # LanceDB answers until a later try works
                log.warning("search cache load failed", error=str(exc))
            finally:
                with self._hot.lock:  # type: ignore[union-attr]
                    self._loading.discard(person_id)

        threading.Thread(target=load, name="search-cache-load", daemon=True).start()

    def _hot_where(self, name: str, person_id: str) -> str:
        return f.all_of(f.eq("person_id", person_id), f.is_null("valid_to") if name == "memories" else None)

    async def _read_rows(self, name: str, where: str, columns: list[str]) -> pa.Table:
        return await self._async[name].query().where(where).select(columns).limit(10_000_000).to_arrow()

    def _part(self, name: str, result: pa.Table) -> Rows:
        rows = Rows(name, _META[name], DIM)
        rows.add(result.drop_columns(["vector"]), _vectors(result))
        return rows

    def _load_entry(self, person_id: str) -> Entry:
        """Every turn and current memory of a person, exact as of the versions read first."""
        versions = self._versions()

        async def both() -> list[pa.Table]:
            return list(
                await asyncio.gather(
                    *(
                        self._read_rows(t, self._hot_where(t, person_id), [*_COLUMNS[t], "vector"])
                        for t in TABLES
                    )
                )
            )

        results = lance.run(both())
        parts = {t: self._part(t, r) for t, r in zip(TABLES, results, strict=True)}
        return Entry(person_id, parts, dict(versions))

    def _sync(self, entry: Entry, name: str) -> None:
        """Bring one table of an entry to the current version after writes the log does not
        know (another process's, a compaction's). Memories (few per person) are read again;
        turns are compared by id, text and visibility, and only changed rows' vectors fetched."""
        hot = self._hot
        assert hot is not None
        version = self._versions()[name]
        where = self._hot_where(name, entry.person_id)
        if name == "memories":
            part = self._part(name, lance.run(self._read_rows(name, where, [*_COLUMNS[name], "vector"])))
            with hot.lock:
                entry.parts[name], entry.versions[name] = part, version
                hot.resized(entry)
            return
        now = lance.run(self._read_rows(name, where, ["id", "text", "visibility"]))
        ids, texts, scopes = (now[c].combine_chunks() for c in ("id", "text", "visibility"))
        with hot.lock:
            part = entry.parts[name]
            same = part.same(ids, texts, scopes)
            gone = part.ids().filter(pc.invert(pc.is_in(part.ids(), value_set=ids))).to_pylist()
        changed = ids.filter(pa.array(~same)).to_pylist()
        fetched = None
        if len(changed) > VERIFY_FETCH_ROWS:
            whole = lance.run(self._read_rows(name, where, [*_COLUMNS[name], "vector"]))
        else:
            whole = None
            if changed:
                fetched = lance.run(
                    self._read_rows(
                        name,
                        f.all_of(where, f.is_in("id", changed)),
                        [*_COLUMNS[name], "vector"],
                    )
                )
        with hot.lock:
            if whole is not None:
                entry.parts[name] = self._part(name, whole)
            else:
                part = entry.parts[name]
                part.remove([*gone, *changed])
                if fetched is not None:
                    part.add(fetched.drop_columns(["vector"]), _vectors(fetched))
            entry.versions[name] = version
            hot.resized(entry)

    def _search_entry(
        self, entry: Entry, visibilities: list[str], searches: Sequence[Search]
    ) -> list[list[Hit]]:
        """Each list from memory: exact cosine over the allowed rows, BM25 over them."""
        # a time span's list shares its query with the whole list: score each query once
        scored: dict[tuple[str, bytes | str], np.ndarray] = {}
        lists: list[list[tuple[int, float]]] = []
        for search in searches:
            part = entry.parts[search.table]
            common = {"roles": search.roles, "since": search.since, "until": search.until}
            if search.vector is not None:
                query = unit(np.asarray(search.vector, dtype=np.float32))
                key: tuple[str, bytes | str] = (search.table, query.tobytes())
                if key not in scored:
                    scored[key] = part.similarity(query)
                lists.append(part.nearest(scored[key], query, search.k, visibilities, **common))
            else:
                key = (search.table, search.text or "")
                if key not in scored:
                    scored[key] = part.scores(terms_of(search.text))
                lists.append(part.matching(scored[key], search.k, visibilities, **common))
        # each table's rows built once, however many lists found them
        items: dict[str, dict[int, Turn | Memory | None]] = {}
        vectors: dict[str, dict[int, np.ndarray]] = {}
        for name in {s.table for s in searches}:
            positions = sorted(
                {i for s, ranked in zip(searches, lists, strict=True) if s.table == name for i, _ in ranked}
            )
            convert = _turn if name == "turns" else _memory
            built: dict[int, Turn | Memory | None] = {}
            for position, row in zip(positions, entry.parts[name].rows(positions), strict=True):
                # as on the LanceDB path: nothing but this person's visible, current rows
                allowed = row["person_id"] == entry.person_id and row["visibility"] in visibilities
                if name == "memories" and row["valid_to"] is not None:
                    allowed = False
                built[position] = convert(row) if allowed else None
            items[name] = built
            if any(s.with_vectors for s in searches if s.table == name):
                vectors[name] = dict(zip(positions, entry.parts[name].vectors(positions), strict=True))
        out: list[list[Hit]] = []
        for search, ranked in zip(searches, lists, strict=True):
            hits = []
            for position, distance in ranked:
                item = items[search.table][position]
                if item is not None:
                    vector = vectors[search.table][position] if search.with_vectors else None
                    hits.append(Hit(item, distance, vector))
            out.append(hits)
        return out
