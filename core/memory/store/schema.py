"""The tables' schemas, the tuning constants of search and upkeep, and how rows become records."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import structlog
from lancedb.index import Bitmap, BTree

from core.memory import filters as f
from core.memory.embed import DIM
from core.memory.hot import TABLES
from core.memory.records import Memory, Turn

log = structlog.get_logger(__name__)

TS = pa.timestamp("us", tz="UTC")
VECTOR = pa.list_(pa.float32(), DIM)

SCHEMAS: dict[str, pa.Schema] = {
    "people": pa.schema(
        [
            ("person_id", pa.string()),
            ("display_name", pa.string()),
            ("settings", pa.string()),
            ("adapter_version", pa.string()),
            ("profile", pa.string()),
            ("created_at", TS),
        ]
    ),
    "identities": pa.schema(
        [
            ("key", pa.string()),
            ("platform", pa.string()),
            ("platform_user_id", pa.string()),
            ("person_id", pa.string()),
            ("linked_at", TS),
        ]
    ),
    "chats": pa.schema(
        [
            ("key", pa.string()),
            ("platform", pa.string()),
            ("chat_id", pa.string()),
            ("record_context", pa.bool_()),
            ("active", pa.bool_()),
        ]
    ),
    "turns": pa.schema(
        [
            ("id", pa.string()),
            ("person_id", pa.string()),
            ("platform", pa.string()),
            ("chat_id", pa.string()),
            ("thread_id", pa.string()),
            ("message_id", pa.string()),
            ("source_id", pa.string()),
            ("role", pa.string()),
            ("text", pa.string()),
            ("ts", TS),
            ("visibility", pa.string()),
            ("vector", VECTOR),
        ]
    ),
    "memories": pa.schema(
        [
            ("id", pa.string()),
            ("person_id", pa.string()),
            ("kind", pa.string()),
            ("text", pa.string()),
            ("source_turn_ids", pa.list_(pa.string())),
            ("confidence", pa.float32()),
            ("created_at", TS),
            ("updated_at", TS),
            ("valid_from", TS),
            ("valid_to", TS),
            ("visibility", pa.string()),
            ("vector", VECTOR),
        ]
    ),
}

_WORD = re.compile(r"\w+", re.UNICODE)
_KEY_COLUMN = {"people": "person_id", "identities": "key", "chats": "key", "turns": "id", "memories": "id"}
_TURN_COLUMNS = [n for n in SCHEMAS["turns"].names if n != "vector"]
_MEMORY_COLUMNS = [n for n in SCHEMAS["memories"].names if n != "vector"]
_META = {name: pa.schema([f for f in SCHEMAS[name] if f.name != "vector"]) for name in TABLES}
_COLUMNS = {"turns": _TURN_COLUMNS, "memories": _MEMORY_COLUMNS}


@dataclass
class ChatSettings:
    """Per group: whether unaddressed messages are kept as context, and whether we still answer."""

    record_context: bool = True
    active: bool = True


@dataclass(frozen=True)
class Hit:
    """One search result: a turn or a memory, and its distance to the query (smaller is closer).

    Full-text hits carry `-bm25` as their distance, so smaller is closer there too; `vector` is
    filled only when the caller asked for it (the diversity step compares candidates).
    """

    item: Turn | Memory
    distance: float
    vector: Any = None


@dataclass(frozen=True)
class Search:
    """One ranked list that recall wants from one table: the nearest vectors when `vector` is
    set, else the best full-text (BM25) matches of `text`; optionally only within a time span
    and only some roles. The person and the visible scopes are given to `search_many` once."""

    table: str  # "turns" | "memories"
    k: int
    vector: Sequence[float] | None = None
    text: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    roles: tuple[str, ...] | None = None
    with_vectors: bool = False


# A vector list compares every allowed row when the filter leaves at most this many (reading
# their vectors costs about what an IVF probe costs at ~2k rows, and it misses nothing); above
# it, the IVF index with VECTOR_INDEX_NPROBES partitions probed. An IVF search with a narrow
# filter finds few allowed rows in the probed partitions (and letting LanceDB probe on until it
# has k costs 4x), which is why the choice counts the rows the filter leaves, time span included.
EXACT_SEARCH_ROWS = 2_000
# The IVF vector index is trained once a table holds this many rows, and retrained (replaced)
# when the table has grown to twice the rows it was trained on; `optimize` folds new rows in between.
COMPACT_EVERY_WRITES = 64
VECTOR_INDEX_MIN_ROWS = 50_000
VECTOR_INDEX_NPROBES = 32
SEARCH_ATTEMPTS = 4  # a batch whose tables changed between its two steps runs again
# The search cache (core/memory/hot.py): people with at most this many turns are loaded on
# their first recall (a few LanceDB reads, about what the searches cost); bigger ones load in
# a background thread while LanceDB answers. A re-read after another process's write fetches
# the changed rows' vectors when at most VERIFY_FETCH_ROWS changed, else the person again.
SEARCH_CACHE_BYTES = 768 * 2**20
SEARCH_CACHE_SYNC_ROWS = 5_000
VERIFY_FETCH_ROWS = 2_000
# Up to this many rows, a person's time-span lists are cut from one ranking of all their rows
# (which reads each row's time); above it, each span is its own query.
WHOLE_LIST_ROWS = 1_000
_TIME_COLUMN = {"turns": "ts", "memories": "valid_from"}
# Every column a recall filter names has a scalar index, so LanceDB answers the whole prefilter
# from indexes (row-id sets intersected) instead of reading the column for each of a person's
# rows. BITMAP where a value stands for many rows (a person, a scope, a role: the index holds
# the ready row set, where a BTREE would collect 100k row ids for a heavy person on each query),
# BTREE for ids and times (ranges, and one row per value).
SCALAR_INDEXES: dict[str, dict[str, Any]] = {
    "turns": {"person_id": Bitmap, "id": BTree, "visibility": Bitmap, "role": Bitmap, "ts": BTree},
    "memories": {
        "person_id": Bitmap,
        "id": BTree,
        "visibility": Bitmap,
        "valid_to": BTree,
        "valid_from": BTree,
    },
}


def _ts_literal(value: datetime) -> str:
    return f"CAST({f.quote(value.astimezone(UTC).isoformat())} AS TIMESTAMP)"


def _roles(roles: Iterable[str] | None) -> tuple[str, ...] | None:
    return tuple(roles) if roles is not None else None


def _twins(span: Search, whole: Search) -> bool:
    """Whether `whole` is the same list as `span` without its time span."""
    same_query = (
        span.vector is not None
        and whole.vector is not None
        and np.array_equal(np.asarray(span.vector), np.asarray(whole.vector))
    ) or (span.vector is None and whole.vector is None and span.text == whole.text)
    return (
        same_query
        and whole.since is None
        and whole.until is None
        and span.table == whole.table
        and span.roles == whole.roles
    )


def _with_vectors(search: Search, with_vectors: bool) -> Search:
    return dataclasses.replace(search, with_vectors=with_vectors)


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return value.to_pydatetime().replace(tzinfo=UTC)


def _turn(row: dict[str, Any]) -> Turn:
    return Turn(
        id=row["id"],
        person_id=row["person_id"],
        platform=row["platform"],
        chat_id=row["chat_id"],
        thread_id=row["thread_id"] or "",
        message_id=row["message_id"],
        source_id=row["source_id"] or row["message_id"],
        role=row["role"],
        text=row["text"],
        ts=_utc(row["ts"]),
        visibility=row["visibility"],
    )


def _with_staged(stored: list[Turn], staged: list[Turn]) -> list[Turn]:
    """Stored turns plus staged ones not committed yet (each once), in conversation order."""
    ids = {t.id for t in stored}
    turns = stored + [t for t in staged if t.id not in ids]
    turns.sort(key=lambda t: (t.ts, t.role != "user"))
    return turns


def _vectors(result: pa.Table) -> np.ndarray:
    """A result's vector column as one (rows, DIM) float32 array, without Python floats."""
    if result.num_rows == 0:
        return np.zeros((0, DIM), dtype=np.float32)
    return result["vector"].combine_chunks().flatten().to_numpy().reshape(-1, DIM)


def _memory(row: dict[str, Any]) -> Memory:
    return Memory(
        id=row["id"],
        person_id=row["person_id"],
        kind=row["kind"],
        text=row["text"],
        source_turn_ids=list(row["source_turn_ids"] or []),
        confidence=float(row["confidence"]),
        created_at=_utc(row["created_at"]),
        updated_at=_utc(row["updated_at"]),
        valid_from=_utc(row["valid_from"]),
        valid_to=_utc(row["valid_to"]),
        visibility=row["visibility"],
    )
