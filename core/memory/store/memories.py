"""Memories the workers consolidate from turns: saving revisions, reading a person's, and the
links back to the turns they came from."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from core.memory import filters as f
from core.memory.hot import Entry
from core.memory.records import Memory
from core.memory.store.base import StoreBase
from core.memory.store.schema import (
    _MEMORY_COLUMNS,
    SCHEMAS,
    _memory,
    _vectors,
)


class Memories(StoreBase):
    # -- memories -----------------------------------------------------------------------------

    def save_memories(self, memories: Sequence[Memory]) -> None:
        """Insert or replace memories by id."""
        if not memories:
            return
        missing = [m for m in memories if m.vector is None]
        if missing:
            for memory, vector in zip(missing, self.embed([m.text for m in missing]), strict=True):
                memory.vector = vector
        data = pa.Table.from_pylist(
            [{**{c: getattr(m, c) for c in _MEMORY_COLUMNS}, "vector": m.vector} for m in memories],
            schema=SCHEMAS["memories"],
        )
        with self._write_lock:
            result = (
                self._tables["memories"]
                .merge_insert("id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(data)
            )
            if self._hot is not None:
                ids = [m.id for m in memories]
                current = data.filter(pc.is_null(data["valid_to"]))

                def upsert(entry: Entry) -> bool:
                    part = entry.parts["memories"]
                    part.remove(i for i in ids if i in part.position)
                    mine = current.filter(pc.equal(current["person_id"], entry.person_id))
                    part.add(mine.drop_columns(["vector"]), _vectors(mine))
                    return True

                self._hot.record("memories", result.version, upsert)
            for memory in memories:
                self._row_counts.pop(("memories", memory.person_id), None)
        self._wrote("memories")

    def memories_of(
        self,
        person_id: str,
        *,
        current_only: bool = True,
        visibilities: Iterable[str] | None = None,
    ) -> list[Memory]:
        where = f.all_of(
            f.eq("person_id", person_id),
            f.is_null("valid_to") if current_only else None,
            f.is_in("visibility", visibilities) if visibilities is not None else None,
        )
        memories = [_memory(r) for r in self._rows("memories", where, _MEMORY_COLUMNS)]
        memories.sort(key=lambda m: m.created_at)
        return memories

    def memories_of_ids(self, ids: Iterable[str]) -> list[Memory]:
        """These memories (any state), for what forgetting them must take along."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        return [_memory(r) for r in self._rows("memories", f.is_in("id", wanted), _MEMORY_COLUMNS)]

    def memories_from_turns(self, turn_ids: Iterable[str]) -> list[Memory]:
        """Memories built (at least partly) from any of these turns."""
        wanted = set(turn_ids)
        if not wanted:
            return []
        clauses = [f"array_has(source_turn_ids, {f.quote(t)})" for t in wanted]
        rows = self._rows("memories", f.any_of(*clauses), _MEMORY_COLUMNS)
        return [_memory(r) for r in rows]

    def delete_memories(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            with self._write_lock:
                self._delete("memories", f.is_in("id", ids), ids=ids)
