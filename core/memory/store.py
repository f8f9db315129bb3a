"""LanceDB tables for people, their accounts, their turns and their memories.

This module is the only one that talks to LanceDB, and every filter it sends is built from
`core.memory.filters`, so no caller can hand LanceDB a string that widens a query.
Forgetting is physical: after a delete, `purge_history` compacts the tables and removes the
older table versions that still hold the deleted rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import threading
import warnings
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import structlog
from lancedb.background_loop import LOOP
from lancedb.index import Bitmap, BTree, IvfSq
from lancedb.table import AsyncTable

from core.memory import filters as f
from core.memory.embed import DIM, Embedder
from core.memory.hot import TABLES, Entry, Rows, SearchCache, terms_of, unit
from core.memory.records import Identity, Memory, Person, PersonSettings, Turn
from core.memory.snapshot import cleanup_guard
from core.memory.writer import Journal, JournalBusy, TurnWriter

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


class Store:
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
        self._async = {name: table._table for name, table in self._tables.items()}
        if not all(isinstance(t, AsyncTable) for t in self._async.values()):
            raise RuntimeError("this lancedb version no longer wraps an AsyncTable in its LanceTable")
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
        return LOOP.run(query.to_arrow()).to_pylist()

    def _load_small_tables(self) -> None:
        """People and accounts are few and read on every message: keep them in memory."""
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

        LOOP.run(latest())
        self._load_small_tables()

    def adopt_journal(self) -> bool:
        """Take the turn journal over once the process that owned it is gone (another chat
        process on this data dir stopped or was killed): what it left is written to LanceDB
        now, and this process records through it from here on."""
        if self._writer is not None or self._journal_path is None:
            return False
        self._writer = self._open_writer(self._journal_path, quiet=True)
        return self._writer is not None

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

    # -- people and identities ----------------------------------------------------------------

    def person(self, person_id: str) -> Person | None:
        return self._people.get(person_id)

    def people(self) -> list[Person]:
        return list(self._people.values())

    def refresh_person(self, person_id: str) -> Person | None:
        """Re-read one person's row: another process (a worker) may have changed it."""
        rows = self._rows("people", f.eq("person_id", person_id), limit=1)
        if not rows:
            self._people.pop(person_id, None)
            return None
        person = self._person_from_row(rows[0])
        self._people[person_id] = person
        return person

    def refresh_people(self) -> list[Person]:
        """Re-read every person (a long-running worker sees people created after it started)."""
        people = {
            row["person_id"]: self._person_from_row(row)
            for row in self._tables["people"].to_arrow().to_pylist()
        }
        self._people = people
        return list(people.values())

    def save_person(self, person: Person) -> None:
        row = {
            "person_id": person.person_id,
            "display_name": person.display_name,
            "settings": person.settings.to_json(),
            "adapter_version": person.adapter_version,
            "profile": person.profile,
            "created_at": person.created_at,
        }
        with self._write_lock:
            table = self._tables["people"]
            table.merge_insert("person_id").when_matched_update_all().when_not_matched_insert_all().execute(
                pa.Table.from_pylist([row], schema=SCHEMAS["people"])
            )
            self._people[person.person_id] = person

    def delete_person_row(self, person_id: str) -> None:
        """Drop the people row only (its data was moved to another person)."""
        with self._write_lock:
            self._tables["people"].delete(f.eq("person_id", person_id))
            self._people.pop(person_id, None)

    def person_for(self, platform: str, platform_user_id: str) -> str | None:
        return self._identities.get((platform, platform_user_id))

    def link_identity(self, platform: str, platform_user_id: str, person_id: str) -> None:
        row = {
            "key": f"{platform}\x1f{platform_user_id}",
            "platform": platform,
            "platform_user_id": platform_user_id,
            "person_id": person_id,
            "linked_at": datetime.now(UTC),
        }
        with self._write_lock:
            self._tables["identities"].merge_insert(
                "key"
            ).when_matched_update_all().when_not_matched_insert_all().execute(
                pa.Table.from_pylist([row], schema=SCHEMAS["identities"])
            )
            self._identities[(platform, platform_user_id)] = person_id

    def unlink_identity(self, platform: str, platform_user_id: str) -> None:
        with self._write_lock:
            self._tables["identities"].delete(
                f.all_of(f.eq("platform", platform), f.eq("platform_user_id", platform_user_id))
            )
            self._identities.pop((platform, platform_user_id), None)

    def identities_of(self, person_id: str) -> list[Identity]:
        rows = self._rows("identities", f.eq("person_id", person_id))
        return [
            Identity(r["platform"], r["platform_user_id"], r["person_id"], _utc(r["linked_at"])) for r in rows
        ]

    # -- chats ------------------------------------------------------------------------------

    def chat(self, platform: str, chat_id: str) -> ChatSettings:
        return self._chats.get((platform, chat_id), ChatSettings())

    def save_chat(self, platform: str, chat_id: str, chat: ChatSettings) -> None:
        row = {
            "key": f"{platform}\x1f{chat_id}",
            "platform": platform,
            "chat_id": chat_id,
            "record_context": chat.record_context,
            "active": chat.active,
        }
        with self._write_lock:
            self._tables["chats"].merge_insert(
                "key"
            ).when_matched_update_all().when_not_matched_insert_all().execute(
                pa.Table.from_pylist([row], schema=SCHEMAS["chats"])
            )
            self._chats[(platform, chat_id)] = chat

    # -- turns ------------------------------------------------------------------------------

    def _open_writer(self, path: Path, *, quiet: bool = False) -> TurnWriter | None:
        """The chat process's deferred turn writes (core/memory/writer.py); first write what a
        previous run left in the journal."""
        try:
            journal = Journal(path)
        except JournalBusy:
            if not quiet:
                log.warning("another process owns the turn journal; recording turns synchronously")
            return None
        left = journal.read()
        if left:
            self._commit_staged(left)
            log.info("turns from the journal written", turns=len(left))
        journal.keep_only([])
        return TurnWriter(journal, self._commit_staged, self.existing_turn_ids)

    def _commit_staged(self, turns: list[Turn]) -> None:
        if self.append_new_turns(turns):
            self._wrote("turns")

    def record_turns(
        self,
        turns: Sequence[Turn],
        *,
        check: bool = True,
        then: Callable[[], None] | None = None,
    ) -> int:
        """The chat path's write: returns how many turns were new (0: a duplicate).

        With a journal (the chat process) the turns are durable when this returns and reach
        LanceDB within about a second, in the background, in one commit with whatever else was
        staged meanwhile; `then` runs once they are there. Without a journal this is
        `add_turns`. turns_of and chat_turns see staged turns; other reads settle first.
        """
        if self._writer is None:
            added = self.add_turns(turns)
            if then is not None:
                then()
            return added
        return self._writer.stage(turns, check=check, then=then)

    def settle(self) -> None:
        """Wait until every staged turn is in LanceDB: before deleting, editing, moving or
        counting turns, and before anything reads them from another process's point of view."""
        if self._writer is not None:
            self._writer.settle()

    def settle_turns_of(self, person_id: str, *, besides: Collection[str] = ()) -> None:
        """Wait only if the person has staged turns other than `besides` (searches read LanceDB,
        so a turn said in another chat a moment ago must be there first)."""
        if self._staged(lambda t: t.person_id == person_id and t.id not in besides):
            self.settle()

    def _staged(self, keep: Callable[[Turn], bool]) -> list[Turn]:
        return self._writer.pending(keep) if self._writer is not None else []

    def write_problem(self) -> str | None:
        """Why staged turns are not reaching LanceDB (they wait in the journal), or None."""
        return self._writer.failing() if self._writer is not None else None

    def backlog(self) -> int:
        """Turns journaled but not in LanceDB yet (a metric: it stays near zero when healthy)."""
        return len(self._staged(lambda t: True))

    def close(self) -> None:
        """Write what is staged and release the journal (the process is stopping)."""
        self._journal_path = None  # and never take it again
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def add_turns(self, turns: Sequence[Turn]) -> int:
        """Insert turns not stored yet (by id); returns how many were new."""
        if not turns:
            return 0
        unique: dict[str, Turn] = {t.id: t for t in turns}
        missing = [t for t in unique.values() if t.vector is None]
        if missing:
            for turn, vector in zip(missing, self.embed([t.text for t in missing]), strict=True):
                turn.vector = vector
        data = pa.Table.from_pylist(
            [{**{c: getattr(t, c) for c in _TURN_COLUMNS}, "vector": t.vector} for t in unique.values()],
            schema=SCHEMAS["turns"],
        )
        with self._write_lock:
            result = self._tables["turns"].merge_insert("id").when_not_matched_insert_all().execute(data)
            if result.num_inserted_rows == data.num_rows:  # else which ones is unknown: entries re-read
                self._log_added("turns", result.version, data)
            for turn in unique.values():
                self._row_counts.pop(("turns", turn.person_id), None)
        self._wrote("turns")
        return int(getattr(result, "num_inserted_rows", len(unique)))

    def has_turn(self, platform: str, chat_id: str, message_id: str) -> bool:
        self.settle()
        where = f.all_of(f.eq("platform", platform), f.eq("chat_id", chat_id), f.eq("message_id", message_id))
        return self._tables["turns"].count_rows(where) > 0

    def count_turns(self, person_id: str, *, role: str | None = None) -> int:
        """How many turns a person has (consolidation notices history imported with old dates)."""
        self.settle()
        where = f.all_of(f.eq("person_id", person_id), f.eq("role", role) if role is not None else None)
        return self._tables["turns"].count_rows(where)

    def turns_by_ids(self, ids: Iterable[str]) -> list[Turn]:
        ids = list(ids)
        if not ids:
            return []
        self.settle()
        return [_turn(r) for r in self._rows("turns", f.is_in("id", ids), _TURN_COLUMNS)]

    def turns_of(
        self,
        person_id: str,
        *,
        since: datetime | None = None,
        platform: str | None = None,
        chat_id: str | None = None,
        visibilities: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[Turn]:
        """A person's turns, oldest first, optionally one chat's and only the given scopes."""
        where = f.all_of(
            f.eq("person_id", person_id),
            f.eq("platform", platform) if platform is not None else None,
            f.eq("chat_id", chat_id) if chat_id is not None else None,
            f.is_in("visibility", visibilities) if visibilities is not None else None,
            f"ts > {f.quote(since.astimezone(UTC).isoformat())}::timestamp" if since else None,
        )
        turns = _with_staged(
            [_turn(r) for r in self._rows("turns", where, _TURN_COLUMNS)],
            self._staged(
                lambda t: (
                    t.person_id == person_id
                    and (platform is None or t.platform == platform)
                    and (chat_id is None or t.chat_id == chat_id)
                    and (visibilities is None or t.visibility in visibilities)
                    and (since is None or t.ts > since)
                )
            ),
        )
        return turns[-limit:] if limit else turns

    def neighbours(
        self,
        person_id: str,
        visibilities: Iterable[str],
        turns: Sequence[Turn],
        *,
        before: int,
        after: int,
        roles: Iterable[str] | None = None,
        gap: timedelta = timedelta(hours=6),
    ) -> dict[str, list[Turn]]:
        """Per turn id, the visible turns said just before and after it in the same chat and
        session (within `gap` of it), oldest first: answers are often the turn next to the one
        a question matches ("What's your daughter's name?" / "Mia")."""
        visibilities, roles = list(visibilities), list(roles) if roles is not None else None
        if not turns or before + after <= 0:
            return {}
        gap_us = gap // timedelta(microseconds=1)
        if self._hot is not None:

            def read(entry: Entry) -> dict[str, list[Turn]] | None:
                part = entry.parts["turns"]
                rows = {t.id: part.position.get(t.id) for t in turns}
                if any(r is None for r in rows.values()):
                    return None  # a turn not held (staged): LanceDB answers
                found = part.around(
                    [r for r in rows.values() if r is not None],
                    visibilities,
                    roles,
                    before=before,
                    after=after,
                    gap_us=gap_us,
                )
                wanted = sorted({r for rs in found.values() for r in rs})
                built = dict(zip(wanted, (_turn(r) for r in part.rows(wanted)), strict=True))
                return {tid: [built[r] for r in found[row]] for tid, row in rows.items() if row is not None}

            held = self._with_entry(person_id, read)
            if held is not None:
                return held
        out: dict[str, list[Turn]] = {}
        for turn in turns:
            where = f.all_of(
                f.eq("person_id", person_id),
                f.eq("platform", turn.platform),
                f.eq("chat_id", turn.chat_id),
                f.is_in("visibility", visibilities),
                f.is_in("role", roles) if roles is not None else None,
                f"ts >= {_ts_literal(turn.ts - gap)} AND ts <= {_ts_literal(turn.ts + gap)}",
            )
            rows = [_turn(r) for r in self._rows("turns", where, _TURN_COLUMNS)]  # stored order breaks ties
            order = sorted(range(len(rows)), key=lambda i: rows[i].ts)
            at = next((n for n, i in enumerate(order) if rows[i].id == turn.id), None)
            if at is None:
                out[turn.id] = []
                continue
            out[turn.id] = [rows[i] for i in order[max(0, at - before) : at] + order[at + 1 : at + 1 + after]]
        return out

    def recent_turns(self, person_id: str, platform: str, chat_id: str, *, limit: int) -> list[Turn]:
        """A direct chat's last turns, oldest first: `turns_of(..., limit=limit)`, read from the
        search cache when the person is held there (a small person is loaded now: their recall
        follows), which spares a LanceDB read of the whole chat."""
        held = None
        if self._hot is not None:
            held = self._with_entry(
                person_id, lambda entry: entry.parts["turns"].last_in_chat(platform, chat_id, limit)
            )
        if held is None:
            return self.turns_of(person_id, platform=platform, chat_id=chat_id, limit=limit)
        turns = _with_staged(
            [_turn(r) for r in held],
            self._staged(lambda t: (t.person_id, t.platform, t.chat_id) == (person_id, platform, chat_id)),
        )
        return turns[-limit:]

    def chat_turns(self, platform: str, chat_id: str, *, scope: str, limit: int = 20) -> list[Turn]:
        """What was said in one group by anyone, within the group's scope, oldest first."""
        where = f.all_of(f.eq("platform", platform), f.eq("chat_id", chat_id), f.eq("visibility", scope))
        turns = _with_staged(
            [_turn(r) for r in self._rows("turns", where, _TURN_COLUMNS)],
            self._staged(lambda t: (t.platform, t.chat_id, t.visibility) == (platform, chat_id, scope)),
        )
        return turns[-limit:]

    def edit_turn(self, platform: str, chat_id: str, message_id: str, text: str) -> bool:
        self.settle()
        where = f.all_of(
            f.eq("platform", platform),
            f.eq("chat_id", chat_id),
            f.eq("message_id", message_id),
            f.eq("role", "user"),
        )
        rows = self._rows("turns", where, _TURN_COLUMNS)
        if not rows:
            return False
        [vector] = self.embed([text])
        edited = pa.Table.from_pylist(
            [{**row, "text": text, "vector": vector} for row in rows], schema=SCHEMAS["turns"]
        )
        with self._write_lock:
            fragments = self._fragments_of("turns", where)
            result = self._tables["turns"].update(where=where, values={"text": text, "vector": vector})
            ids = [row["id"] for row in rows]
            if self._hot is not None:
                self._hot.remove_everywhere("turns", ids)  # the old text leaves memory now

                def replace(entry: Entry) -> bool:
                    part = entry.parts["turns"]
                    part.remove(ids)
                    mine = edited.filter(pc.equal(edited["person_id"], entry.person_id))
                    part.add(mine.drop_columns(["vector"]), _vectors(mine))
                    return True

                self._hot.record("turns", result.version, replace)
            self._rewrite_fragments("turns", fragments)  # the old text leaves with the old file
        return True

    def turns_by_message(self, platform: str, chat_id: str, message_id: str) -> list[Turn]:
        """The person's message and the assistant's reply to it."""
        self.settle()
        where = f.all_of(f.eq("platform", platform), f.eq("chat_id", chat_id), f.eq("message_id", message_id))
        return [_turn(r) for r in self._rows("turns", where, _TURN_COLUMNS)]

    def delete_turns(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            self.settle()
            with self._write_lock:
                self._delete("turns", f.is_in("id", ids), ids=ids)

    def reassign_person(self, old: str, new: str) -> None:
        """Move every row of `old` to `new` (account linking), scopes untouched."""
        self.settle()
        with self._write_lock:
            for name in ("turns", "memories", "identities"):
                result = self._tables[name].update(where=f.eq("person_id", old), values={"person_id": new})
                if self._hot is not None and name in TABLES:
                    self._hot.record(name, result.version, lambda e: e.person_id not in (old, new))
            if self._hot is not None:
                self._hot.drop(old)
                self._hot.drop(new)
            self._row_counts.clear()
            for key, pid in list(self._identities.items()):
                if pid == old:
                    self._identities[key] = new

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
        return LOOP.run(self._search_all(person_id, visibilities, searches, fts))

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

        return dict(zip(TABLES, LOOP.run(both()), strict=True))

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
        if LOOP.run(self._person_rows("turns", person_id)) > self._hot_sync_rows:
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

        results = LOOP.run(both())
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
            part = self._part(name, LOOP.run(self._read_rows(name, where, [*_COLUMNS[name], "vector"])))
            with hot.lock:
                entry.parts[name], entry.versions[name] = part, version
                hot.resized(entry)
            return
        now = LOOP.run(self._read_rows(name, where, ["id", "text", "visibility"]))
        ids, texts, scopes = (now[c].combine_chunks() for c in ("id", "text", "visibility"))
        with hot.lock:
            part = entry.parts[name]
            same = part.same(ids, texts, scopes)
            gone = part.ids().filter(pc.invert(pc.is_in(part.ids(), value_set=ids))).to_pylist()
        changed = ids.filter(pa.array(~same)).to_pylist()
        fetched = None
        if len(changed) > VERIFY_FETCH_ROWS:
            whole = LOOP.run(self._read_rows(name, where, [*_COLUMNS[name], "vector"]))
        else:
            whole = None
            if changed:
                fetched = LOOP.run(
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

    def _has_fts(self, name: str) -> bool:
        if name not in self._fts_ready:
            indexes = self._tables[name].list_indices()
            if any(idx.name == "text_idx" for idx in indexes):
                self._fts_ready.add(name)
            else:
                return False
        return True

    def append_new_turns(self, turns: Sequence[Turn]) -> int:
        """Bulk insert for imports: embed and append only turns whose id is not stored yet.

        The check and the append happen under the write lock, so within this process a turn is
        never stored twice; a plain append is much cheaper than a merge on a growing table.
        """
        unique = list({t.id: t for t in turns}.values())
        if not unique:
            return 0
        with self._write_lock:
            existing = self.existing_turn_ids(t.id for t in unique)
            new = [t for t in unique if t.id not in existing]
            if not new:
                return 0
            missing = [t.text for t in new if t.vector is None]
            embedded = iter(self.embedder.embed(missing) if missing else [])
            vectors = np.asarray(
                [next(embedded) if t.vector is None else t.vector for t in new], dtype=np.float32
            )
            columns = {c: [getattr(t, c) for t in new] for c in _TURN_COLUMNS}
            columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM)
            data = pa.table(columns, schema=SCHEMAS["turns"])
            result = self._tables["turns"].add(data)
            self._log_added("turns", result.version, data)
            for person_id in {t.person_id for t in new}:
                self._row_counts.pop(("turns", person_id), None)
        return len(new)

    def existing_turn_ids(self, ids: Iterable[str]) -> set[str]:
        """Which of these turn ids are stored already (an import skips embedding them)."""
        ids = list(ids)
        if not ids:
            return set()
        where = f.is_in("id", ids)
        if not self._tables["turns"].count_rows(where):  # the usual answer, from the id index alone
            return set()
        return {r["id"] for r in self._rows("turns", where, ["id"])}

    def source_ids_for(self, turn_ids: Iterable[str]) -> dict[str, str]:
        """turn id -> the id the message had on its platform or in its import file."""
        rows = self._rows("turns", f.is_in("id", list(turn_ids)), ["id", "source_id", "message_id"])
        return {r["id"]: r["source_id"] or r["message_id"] for r in rows}

    def counts(self) -> dict[str, int]:
        self.settle()
        return {name: table.count_rows() for name, table in self._tables.items()}
