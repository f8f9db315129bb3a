"""Upkeep: scalar, full-text and vector indexes, and compaction after enough writes."""

from __future__ import annotations

import threading
from typing import Any

import structlog
from lancedb.index import IvfSq

from core.memory.snapshot import cleanup_guard
from core.memory.store.base import StoreBase
from core.memory.store.schema import (
    COMPACT_EVERY_WRITES,
    SCALAR_INDEXES,
    VECTOR_INDEX_MIN_ROWS,
)

log = structlog.get_logger(__name__)


class Upkeep(StoreBase):
    def _rebuild_text_index(self, name: str) -> None:
        """The inverted index keeps the words of deleted rows until it is rebuilt."""
        table = self._tables[name]
        if any(idx.name == "text_idx" for idx in table.list_indices()):
            table.create_fts_index(
                "text", replace=True, stem=True, remove_stop_words=True, ascii_folding=True
            )

    def _wrote(self, name: str) -> None:
        """Every write adds a small fragment that each later query opens; fold them together
        in the background every COMPACT_EVERY_WRITES writes instead of waiting for the upkeep."""
        self._writes[name] += 1
        if self._writes[name] % COMPACT_EVERY_WRITES == 0 and self._compacting.acquire(blocking=False):
            threading.Thread(target=self._compact, args=(name,), daemon=True, name="compact").start()

    def _compact(self, name: str) -> None:
        try:
            with cleanup_guard(self.uri):  # optimize drops week-old versions' files
                self._tables[name].optimize()
        except Exception as exc:  # a concurrent delete won the commit; the next round retries
            log.warning("background compaction skipped", table=name, error=str(exc))
        finally:
            self._compacting.release()

    def ensure_indexes(self) -> None:
        """Create the indexes recall needs, and fold rows added since into them.

        Which indexes, per table (turns, memories):
        - scalar indexes on every column a recall filter names (SCALAR_INDEXES): BITMAP on
          `person_id`, `visibility` and `role`, BTREE on `id` (merge_insert, re-import checks)
          and on the times (`ts`; `valid_from`, `valid_to`), so a prefilter is a few row-set
          intersections and never a read of a column;
        - a full-text (inverted) index on `text` with English stemming;
        - from VECTOR_INDEX_MIN_ROWS rows, an IVF_SQ cosine index on `vector`.

        When they are (re)built as data grows: scalar and full-text indexes are built once, by
        the first call that finds rows (an index of another type on the same column, e.g. the
        BTREE on `person_id` of older stores, is replaced). After that `optimize` folds new rows
        into every index (incrementally, without retraining): every call here does it, and
        `_wrote` does it in the background every COMPACT_EVERY_WRITES writes; until then, new
        rows are searched flat. The IVF index is trained at VECTOR_INDEX_MIN_ROWS rows and
        retrained (replaced) when the table has grown to twice the rows it was trained on, so
        its partitions keep fitting the data. /forget_me rebuilds the `person_id` index and the
        text indexes (they keep deleted values until rebuilt). Call this after an import and
        periodically (the workers' upkeep), not per message.
        """
        # lock order everywhere: _compacting, then the cleanup guard, then _write_lock
        with cleanup_guard(self.uri), self._write_lock:
            for name in ("turns", "memories"):
                table = self._tables[name]
                rows = table.count_rows()
                if rows == 0:
                    continue
                indexes = {idx.name: idx for idx in table.list_indices()}
                for column, config in SCALAR_INDEXES[name].items():
                    existing = indexes.get(f"{column}_idx")
                    if existing is None or existing.index_type != config.__name__:
                        table.create_index(column, config=config(), name=f"{column}_idx", replace=True)
                if "text_idx" not in indexes:
                    table.create_fts_index(
                        "text", replace=True, stem=True, remove_stop_words=True, ascii_folding=True
                    )
                vector_idx = indexes.get("vector_idx")
                trained = int(getattr(vector_idx, "num_indexed_rows", 0) or 0) if vector_idx else 0
                if rows >= VECTOR_INDEX_MIN_ROWS and (vector_idx is None or rows >= 2 * trained):
                    self._build_vector_index(table, rows)
                table.optimize()
                self._row_counts.clear()
                log.info("indexes ready", table=name, rows=rows)

    @staticmethod
    def _build_vector_index(table: Any, rows: int) -> None:
        partitions = max(16, min(1024, int(rows**0.5 / 2)))
        table.create_index(
            "vector", config=IvfSq(distance_type="cosine", num_partitions=partitions), replace=True
        )

    def counts(self) -> dict[str, int]:
        self.settle()
        return {name: table.count_rows() for name, table in self._tables.items()}
