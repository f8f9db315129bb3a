"""Physical erasure: deleting a person's rows, rewriting the fragments that held them, and
purging old table versions so deleted text leaves the disk."""

from __future__ import annotations

import warnings
from datetime import timedelta

import structlog
from lancedb.index import BTree

from core.memory import filters as f
from core.memory.hot import TABLES
from core.memory.snapshot import cleanup_guard
from core.memory.store.base import StoreBase
from core.memory.store.schema import (
    _KEY_COLUMN,
    SCALAR_INDEXES,
)

log = structlog.get_logger(__name__)


class Erasure(StoreBase):
    # -- forgetting and upkeep ----------------------------------------------------------------

    def forget_person(self, person_id: str) -> None:
        """Delete every row of a person, then purge old versions so the text leaves the disk."""
        where = f.eq("person_id", person_id)
        self.settle()
        with self._write_lock:
            if self._hot is not None:
                self._hot.drop(person_id)
            for name in ("turns", "memories", "identities", "people"):
                table = self._tables[name]
                self._delete(name, where, person_id=person_id)
                # A scalar index keeps deleted values until rebuilt, and the latest transaction
                # records the delete's predicate (the person id): rebuild, then commit a no-op
                # so that purge_history can drop the transaction that names the person.
                for index in table.list_indices():
                    if list(index.columns) == ["person_id"]:
                        config = SCALAR_INDEXES.get(name, {}).get("person_id", BTree)
                        table.create_index("person_id", config=config(), name=index.name, replace=True)
                noop = table.delete("false")
                if self._hot is not None and name in TABLES:
                    self._hot.record(name, noop.version, lambda e: True)
                self._row_counts.pop((name, person_id), None)
            self._people.pop(person_id, None)
            for key, pid in list(self._identities.items()):
                if pid == person_id:
                    del self._identities[key]
        self.purge_history()

    def _fragments_of(self, name: str, where: str) -> set[int]:
        """The data files (fragments) holding rows that match `where`: a row id is the row's
        address, fragment << 32 | offset (with stable row ids the range below covers more
        than needed, which is slower but still right)."""
        rows = (
            self._tables[name]
            .search()
            .where(where)
            .with_row_id(True)
            .select([_KEY_COLUMN[name]])
            .limit(10_000_000)
            .to_list()
        )
        return {int(r["_rowid"]) >> 32 for r in rows}

    def _rewrite_fragments(self, name: str, fragments: set[int]) -> None:
        """A delete only marks rows deleted; their bytes stay in the fragment's file until it is
        rewritten, and compaction rewrites a fragment only when 10% of it is deleted. Rewriting
        the surviving rows (an update that changes nothing) leaves the old file fully deleted,
        so `purge_history` drops it, and the deleted text with it."""
        key = _KEY_COLUMN[name]
        table = self._tables[name]
        for fragment in sorted(fragments):
            where = f"_rowid >= {fragment << 32} AND _rowid < {(fragment + 1) << 32}"
            if table.count_rows(where):
                result = table.update(where=where, values_sql={key: key})
                if self._hot is not None and name in TABLES:  # the same rows, rewritten
                    self._hot.record(name, result.version, lambda e: True)

    def _delete(
        self, name: str, where: str, *, ids: list[str] | None = None, person_id: str | None = None
    ) -> None:
        """Delete rows so that a purge removes their bytes from disk (see _rewrite_fragments).
        `ids` or `person_id` say which rows `where` names, for the search cache."""
        fragments = self._fragments_of(name, where)
        result = self._tables[name].delete(where)
        if self._hot is not None and name in TABLES:
            if ids is not None:
                self._hot.remove_everywhere(name, ids)
                self._hot.record(name, result.version, lambda e: e.parts[name].remove(ids) >= 0)
            elif person_id is not None:
                self._hot.drop(person_id)
                self._hot.record(name, result.version, lambda e: e.person_id != person_id)
        self._rewrite_fragments(name, fragments)
        self._row_counts.clear()

    def purge_history(self) -> None:
        """Compact every table and drop all older versions: deleted rows stop existing on disk."""
        self.settle()  # and a journal keeps no forgotten text
        # no background compaction may be writing files while unreferenced files are deleted,
        # and no backup copying them (core/memory/snapshot.py)
        with self._compacting, cleanup_guard(self.uri), self._write_lock, warnings.catch_warnings():
            # Removing every old version is the point here; a reader on an old version retries.
            warnings.simplefilter("ignore", UserWarning)
            for name, table in self._tables.items():
                self._rebuild_text_index(name)
                table.optimize(cleanup_older_than=timedelta(0), delete_unverified=True)
                log.debug("table purged", table=name, version=table.version)
