"""Search: the simple vector search and recall's hybrid batch (vectors, full text, time spans),
answered by LanceDB or by the in-memory search cache."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import structlog

from core.memory import filters as f
from core.memory.embed import DIM
from core.memory.store import lance
from core.memory.store.base import StoreBase
from core.memory.store.schema import (
    _MEMORY_COLUMNS,
    _TIME_COLUMN,
    _TURN_COLUMNS,
    _WORD,
    EXACT_SEARCH_ROWS,
    SEARCH_ATTEMPTS,
    VECTOR_INDEX_NPROBES,
    WHOLE_LIST_ROWS,
    Hit,
    Search,
    _memory,
    _roles,
    _ts_literal,
    _turn,
    _twins,
    _with_vectors,
)

log = structlog.get_logger(__name__)


class Searching(StoreBase):
    # -- search -------------------------------------------------------------------------------

    def search(
        self,
        name: str,
        person_id: str,
        vector: Sequence[float],
        *,
        visibilities: Iterable[str],
        k: int,
        exclude_chat: tuple[str, str] | None = None,
    ) -> list[Hit]:
        """Nearest turns or current memories of one person, only within the given scopes."""
        where = f.all_of(
            f.eq("person_id", person_id),
            f.is_in("visibility", visibilities),
            f.is_null("valid_to") if name == "memories" else None,
            f"NOT ({f.all_of(f.eq('platform', exclude_chat[0]), f.eq('chat_id', exclude_chat[1]))})"
            if exclude_chat and name == "turns"
            else None,
        )
        columns = _TURN_COLUMNS if name == "turns" else _MEMORY_COLUMNS
        rows = (
            self._tables[name]
            .search(list(vector))
            .distance_type("cosine")
            .where(where, prefilter=True)
            .select([*columns, "_distance"])
            .limit(k)
            .to_list()
        )
        convert = _turn if name == "turns" else _memory
        return [Hit(convert(r), float(r["_distance"])) for r in rows]

    # -- hybrid search (recall) ---------------------------------------------------------------

    def _search_filter(
        self,
        name: str,
        person_id: str,
        visibilities: Iterable[str],
        *,
        since: datetime | None,
        until: datetime | None,
        roles: Iterable[str] | None,
    ) -> str:
        column = _TIME_COLUMN[name]
        return f.all_of(
            f.eq("person_id", person_id),
            f.is_in("visibility", visibilities),
            f.is_null("valid_to") if name == "memories" else None,
            f.is_in("role", roles) if roles is not None and name == "turns" else None,
            f"{column} >= {_ts_literal(since)}" if since else None,
            f"{column} < {_ts_literal(until)}" if until else None,
        )

    def search_vector(
        self,
        name: str,
        person_id: str,
        vector: Sequence[float],
        *,
        visibilities: Iterable[str],
        k: int,
        since: datetime | None = None,
        until: datetime | None = None,
        roles: Iterable[str] | None = None,
        with_vectors: bool = False,
    ) -> list[Hit]:
        """Nearest turns or current memories of one person within the given scopes (and time)."""
        search = Search(name, k, vector=vector, since=since, until=until, roles=_roles(roles))
        return self.search_many(person_id, visibilities, [_with_vectors(search, with_vectors)])[0]

    def search_text(
        self,
        name: str,
        person_id: str,
        text: str,
        *,
        visibilities: Iterable[str],
        k: int,
        since: datetime | None = None,
        until: datetime | None = None,
        roles: Iterable[str] | None = None,
        with_vectors: bool = False,
    ) -> list[Hit]:
        """Full-text (BM25) matches among one person's visible turns or current memories."""
        search = Search(name, k, text=text, since=since, until=until, roles=_roles(roles))
        return self.search_many(person_id, visibilities, [_with_vectors(search, with_vectors)])[0]

    def search_many(
        self, person_id: str, visibilities: Iterable[str], searches: Sequence[Search]
    ) -> list[list[Hit]]:
        """Several ranked lists of one person's visible rows, run side by side in one batch.

        Everything that limits what may be seen is a prefilter answered from scalar indexes, so
        a person's top k are taken from their own visible rows only. Vector lists are exact
        (every candidate row compared) when the filter leaves at most EXACT_SEARCH_ROWS rows,
        and go through the IVF index otherwise: an IVF search with a selective prefilter probes
        partitions that hold few of the allowed rows and misses some. Full-text lists need the
        inverted index (`ensure_indexes`); without one they are empty rather than failing a reply.
        """
        visibilities = list(visibilities)
        if self._hot is not None:
            hits = self._hot_search(person_id, visibilities, searches)
            if hits is not None:
                return hits
        # list_indices is a sync call: ask before entering LanceDB's event loop
        fts = {s.table: self._has_fts(s.table) for s in searches if s.vector is None}
        return lance.run(self._search_all(person_id, visibilities, searches, fts))

    async def _search_all(
        self, person_id: str, visibilities: list[str], searches: Sequence[Search], fts: dict[str, bool]
    ) -> list[list[Hit]]:
        """Two steps. First every list is ranked reading only row ids and scores (a row's other
        columns cost a random read each, and most candidates recur in several lists); then each
        table's candidates are read once. Row ids are addresses within one table version, so
        both steps must have read the same versions: if a write or a compaction landed in
        between, the batch runs again (up to SEARCH_ATTEMPTS times).

        A list restricted to a time span is cut from its unrestricted twin when the person has
        at most WHOLE_LIST_ROWS rows: that twin then ranks all their matching rows exactly
        (BM25 scores do not depend on the filter), so the span's top k are the twin's first k
        rows inside the span, and one query serves both."""
        names = sorted({s.table for s in searches})
        small = dict(
            zip(
                names,
                await asyncio.gather(*(self._person_rows(n, person_id) for n in names)),
                strict=True,
            )
        )
        twins: dict[int, int] = {}  # span list -> its unrestricted twin
        for i, span in enumerate(searches):
            if (span.since or span.until) and small[span.table] <= WHOLE_LIST_ROWS:
                j = next((j for j, whole in enumerate(searches) if _twins(span, whole)), None)
                if j is not None:
                    twins[i] = j
        for attempt in range(SEARCH_ATTEMPTS):
            before = [await self._async[name].version() for name in names]
            ranked = list(
                await asyncio.gather(
                    *(
                        self._ranked_rows(
                            person_id, visibilities, s, fts.get(s.table, False), whole=i in twins.values()
                        )
                        for i, s in enumerate(searches)
                        if i not in twins
                    )
                )
            )
            by_index = dict(zip([i for i in range(len(searches)) if i not in twins], ranked, strict=True))
            for i, j in twins.items():
                span = searches[i]
                by_index[i] = [
                    r
                    for r in by_index[j]
                    if r[2] is not None
                    and (span.since is None or r[2] >= span.since)
                    and (span.until is None or r[2] < span.until)
                ][: span.k]
            lists = [by_index[i][: s.k] for i, s in enumerate(searches)]
            fetched = await asyncio.gather(
                *(
                    self._take(
                        name,
                        {
                            r[0]
                            for s, rows in zip(searches, lists, strict=True)
                            if s.table == name
                            for r in rows
                        },
                        with_vectors=any(s.with_vectors for s in searches if s.table == name),
                    )
                    for name in names
                )
            )
            if before == [await self._async[name].version() for name in names]:
                break
            if attempt == SEARCH_ATTEMPTS - 1:
                # Still safe (every row is checked below); at worst a moved row is ranked in
                # place of another of this person's rows.
                log.warning("tables kept changing during a search", tables=names)
        rows = dict(zip(names, fetched, strict=True))
        out: list[list[Hit]] = []
        for search, ranked_rows in zip(searches, lists, strict=True):
            convert = _turn if search.table == "turns" else _memory
            table_rows = rows[search.table]
            hits = []
            for row_id, distance, _ in ranked_rows:
                row = table_rows.get(row_id)
                # the filter was applied by the ranking step; checked again, as nothing else may
                # ever reach a prompt: this person's, visible here, current
                if row is None or row["person_id"] != person_id or row["visibility"] not in visibilities:
                    continue
                if search.table == "memories" and row["valid_to"] is not None:
                    continue
                hits.append(Hit(convert(row), distance, row.get("vector") if search.with_vectors else None))
            out.append(hits)
        return out

    async def _ranked_rows(
        self, person_id: str, visibilities: list[str], search: Search, fts: bool, *, whole: bool = False
    ) -> list[tuple[int, float, datetime | None]]:
        """(row id, distance, time) of one list, best first; full-text scores as -BM25 (smaller
        is closer). `whole`: every matching row of a small person, with its time (else None)."""
        name = search.table
        table = self._async[name]
        where = self._search_filter(
            name, person_id, visibilities, since=search.since, until=search.until, roles=search.roles
        )
        limit = WHOLE_LIST_ROWS if whole else search.k
        times = [_TIME_COLUMN[name]] if whole else []
        if search.vector is not None:
            query = (
                table.query()
                .nearest_to(np.asarray(search.vector, dtype=np.float32))
                .distance_type("cosine")
                .where(where)
                .with_row_id()
                .select([*times, "_distance"])
                .limit(limit)
            )
            if await self._exact(name, person_id, where, search):
                query = query.bypass_vector_index()
            else:
                query = query.nprobes(VECTOR_INDEX_NPROBES)
            result = await query.to_arrow()
            scores = result["_distance"].to_pylist()
        else:
            terms = " ".join(_WORD.findall(search.text or ""))
            if not terms.strip() or not fts:
                return []
            query = table.query().nearest_to_text(terms, columns="text").where(where).with_row_id()
            result = await query.select([*times, "_score"]).limit(limit).to_arrow()
            scores = [-s for s in result["_score"].to_pylist()]
        ts = result[times[0]].to_pylist() if whole else [None] * result.num_rows
        return list(zip(result["_rowid"].to_pylist(), scores, ts, strict=True))

    async def _take(self, name: str, row_ids: set[int], *, with_vectors: bool) -> dict[int, dict[str, Any]]:
        """The rows at these row ids (of the version just searched), by row id."""
        if not row_ids:
            return {}
        columns = [
            *(_TURN_COLUMNS if name == "turns" else _MEMORY_COLUMNS),
            *(["vector"] if with_vectors else []),
        ]
        result = (
            await self._async[name].take_row_ids(sorted(row_ids)).with_row_id().select(columns).to_arrow()
        )
        rows = result.drop_columns(["vector"]).to_pylist() if with_vectors else result.to_pylist()
        if with_vectors:  # one numpy view instead of 384 Python floats per row
            vectors = result["vector"].combine_chunks().flatten().to_numpy().reshape(-1, DIM)
            for row, vector in zip(rows, vectors, strict=True):
                row["vector"] = vector
        return {row["_rowid"]: row for row in rows}

    async def _person_rows(self, name: str, person_id: str) -> int:
        """How many rows a person has in a table (cached until a write; it picks exact search)."""
        key = (name, person_id)
        rows = self._row_counts.get(key)
        if rows is None:
            rows = self._row_counts[key] = await self._async[name].count_rows(f.eq("person_id", person_id))
        return rows

    async def _exact(self, name: str, person_id: str, where: str, search: Search) -> bool:
        """Whether a vector list compares every allowed row instead of probing the IVF index."""
        if await self._person_rows(name, person_id) <= EXACT_SEARCH_ROWS:
            return True
        if search.since is None and search.until is None:
            return False
        # a time span of a heavy person: usually few rows, which an IVF probe would mostly miss
        return await self._async[name].count_rows(where) <= EXACT_SEARCH_ROWS

    def _has_fts(self, name: str) -> bool:
        if name not in self._fts_ready:
            indexes = self._tables[name].list_indices()
            if any(idx.name == "text_idx" for idx in indexes):
                self._fts_ready.add(name)
            else:
                return False
        return True
