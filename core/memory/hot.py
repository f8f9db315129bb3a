"""The search cache: the rows of people who talk now, in memory, searched without LanceDB.

Why: one recall needs two to eight ranked lists (vector and full text, turns and memories,
plus time-span variants), and each LanceDB query costs 5-20 ms of fixed work however few rows
the person has. For a person held here a vector list is one matrix-vector product over their
rows plus a filter mask, and a full-text list is BM25 over their rows (core/memory/textindex.py).

What is held: per person, every turn and every current memory, column-wise: unit vectors
(see Vectors), times, roles and visibilities as small codes, the ids, and the other columns as an
Arrow table the hits are built from. Bounded by bytes, least recently used out first.

Consistency, which is what makes this safe to use for privacy-bearing recall:
- An entry is exact as of one LanceDB version per table. Every write this process makes through
  the Store is logged here under the version it committed (`record`), with how it changes an
  entry; before a search, the entry replays the logged versions it has not seen (`catch_up`).
- A version that is not in the log (another process wrote: a worker's memories, an import, a
  compaction) cannot be replayed: the Store re-reads what it needs (`Store._sync`) and only
  then searches here. So another process's write is seen as soon as LanceDB shows it to this
  process (its read consistency interval), as with a LanceDB query.
- Replaying is idempotent (adding a row whose id is held is a no-op), because a read at
  version v may already contain some of the writes after v.
- Deletions are also applied at once to every entry, so forgotten text does not even wait in
  memory for its person's next message.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from core.memory.textindex import TextIndex, analyse

TABLES = ("turns", "memories")
TIME_COLUMN = {"turns": "ts", "memories": "valid_from"}
LOG_VERSIONS = 4096  # logged versions kept per table; an entry further behind re-reads instead
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# An operation logged under a version: change the entry, or return False when the entry must
# re-read that table instead (the change cannot be replayed from what the writer knew).
Op = Callable[["Entry"], bool]


def micros(value: datetime) -> int:
    return (value.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (cosine = dot product); zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


# How far a coarse (bf16) cosine can be from the exact one: row and query each rounded to 8
# significant bits (at most 2^-7 over a dot product of unit vectors, by Cauchy-Schwarz), and the
# result rounded once more (2^-8): 2^-6 bounds both.
COARSE_ERROR = 2.0**-6
SMALL_ROWS = 8_192  # up to this many rows a person's vectors are scored exactly, in numpy


class Vectors:
    """Unit vectors as two bf16 halves: `hi` (bf16 of the vector) and `lo` (bf16 of what hi
    missed). A search scans `hi` only, half the bytes of float32, which is what a matrix-vector
    product over 100k rows is bound by (measured on 2 cores, one thread: ~3.5 ms vs ~7 ms for
    float32 on two), then re-scores its few best rows with hi + lo, which is float32 to ~2^-16.
    The two halves take what one float32 copy takes. Up to SMALL_ROWS rows, a float32 copy is
    kept besides and scored directly (converting them for each query would cost more)."""

    def __init__(self, dim: int) -> None:
        # bf16 bit patterns in numpy (gathers of a few rows are microseconds there, but
        # milliseconds through torch's indexing); torch sees them without a copy for the product
        self.hi = _aligned(0, dim)
        self.lo = _aligned(0, dim)
        self._small: np.ndarray | None = None  # float32 rows, while there are few

    @property
    def nbytes(self) -> int:
        return self.hi.nbytes + self.lo.nbytes + (self._small.nbytes if self._small is not None else 0)

    def __len__(self) -> int:
        return self.hi.shape[0]

    def grow(self, size: int, used: int) -> None:
        for name in ("hi", "lo"):
            old = getattr(self, name)
            new = _aligned(size, old.shape[1])
            new[:used] = old[:used]
            setattr(self, name, new)
        self._small = None

    def put(self, start: int, vectors: np.ndarray) -> None:
        exact = np.ascontiguousarray(unit(vectors))
        hi = _bf16(exact)
        self.hi[start : start + len(exact)] = hi
        self.lo[start : start + len(exact)] = _bf16(exact - _float(hi))
        self._small = None

    def keep(self, rows: np.ndarray) -> None:
        for name in ("hi", "lo"):
            new = _aligned(len(rows), self.hi.shape[1])
            new[:] = getattr(self, name)[rows]
            setattr(self, name, new)
        self._small = None

    def coarse(self, query: np.ndarray, n: int) -> np.ndarray:
        """Cosines of rows 0..n-1 to a unit query, each within COARSE_ERROR. A few thousand
        rows are scored exactly in numpy: torch's thread pool costs more than such a product."""
        if n <= SMALL_ROWS:
            if self._small is None or len(self._small) != n:
                self._small = _float(self.hi[:n]) + _float(self.lo[:n])
            return self._small @ np.asarray(query, dtype=np.float32)
        q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32)).to(torch.bfloat16)
        rows = torch.from_numpy(self.hi[:n].view(np.int16)).view(torch.bfloat16)
        # one thread (for this calling thread only: OpenMP's setting is per thread): a
        # two-thread product waits for a core the model or another process holds, measured
        # 8-15 ms instead of 3.5 ms on a busy 2-core machine
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            product = torch.mv(rows, q)
        finally:
            torch.set_num_threads(threads)
        return _float(product.view(torch.int16).numpy().view(np.uint16))

    def exact(self, rows: np.ndarray) -> np.ndarray:
        return _float(self.hi[rows]) + _float(self.lo[rows])


def _aligned(rows: int, dim: int) -> np.ndarray:
    """A zeroed uint16 array in memory torch allocated (64-byte aligned): numpy's large arrays
    start 16 bytes into a page, so every vector load of the product straddles two cache lines
    (measured ~1.7x slower)."""
    return torch.zeros((rows, dim), dtype=torch.int16).numpy().view(np.uint16)


def _bf16(values: np.ndarray) -> np.ndarray:
    """float32 rounded to the nearest bf16 (ties to even), as bit patterns."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def _float(bits: np.ndarray) -> np.ndarray:
    """bf16 bit patterns as float32 (bf16 is the top half of a float32)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


class Rows:
    """One person's rows of one table: search columns as numpy arrays, the rest as Arrow."""

    def __init__(self, table: str, schema: pa.Schema, dim: int) -> None:
        self.table = table
        self.schema = schema  # without the vector
        self.meta = schema.empty_table()
        self.n = 0
        self._vectors = Vectors(dim)  # capacity grows by doubling, as the arrays below
        self._time = np.zeros(0, dtype=np.int64)
        self._role = np.zeros(0, dtype=np.int32)
        self._visibility = np.zeros(0, dtype=np.int32)
        self._chat = np.zeros(0, dtype=np.int32)  # platform and chat, coded (turns only)
        self._codes: dict[str, int] = {}
        self.position: dict[str, int] = {}  # id -> row
        self.text = TextIndex()
        self._masks: dict[tuple, np.ndarray] = {}  # (scopes, roles) -> allowed rows
        self._order: np.ndarray | None = None  # rows by chat, then time (built when first asked)
        self._rank: np.ndarray | None = None  # row -> its place in _order

    @property
    def nbytes(self) -> int:
        arrays = self._vectors.nbytes + self._time.nbytes + self._role.nbytes + self._visibility.nbytes
        arrays += self._chat.nbytes + (self._order.nbytes if self._order is not None else 0)
        return arrays + self.meta.nbytes + self.text.nbytes + 100 * len(self.position)

    def _code(self, value: str | None) -> int:
        return self._codes.setdefault(value or "", len(self._codes))

    def _grow(self, need: int) -> None:
        if need <= len(self._vectors):
            return
        size = max(need, 2 * len(self._vectors), 64)
        self._vectors.grow(size, self.n)
        for name in ("_time", "_role", "_visibility", "_chat"):
            old = getattr(self, name)
            new = np.zeros((size, *old.shape[1:]), dtype=old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def add(self, meta: pa.Table, vectors: np.ndarray) -> int:
        """Append rows whose ids are not held yet; returns how many were new."""
        ids = meta["id"].to_pylist()
        fresh, seen = [], set()
        for i, row_id in enumerate(ids):
            if row_id not in self.position and row_id not in seen:
                fresh.append(i)
                seen.add(row_id)
        if not fresh:
            return 0
        if len(fresh) < len(ids):
            meta, vectors = meta.take(fresh), np.asarray(vectors)[fresh]
        meta = meta.select(self.schema.names).cast(self.schema)
        start, end = self.n, self.n + meta.num_rows
        self._grow(end)
        self._vectors.put(start, vectors)
        times = meta[TIME_COLUMN[self.table]].cast(pa.int64()).fill_null(np.iinfo(np.int64).min)
        self._time[start:end] = times.to_numpy()
        roles = meta["role"].to_pylist() if "role" in meta.column_names else [""] * meta.num_rows
        self._role[start:end] = [self._code(r) for r in roles]
        self._visibility[start:end] = [self._code(v) for v in meta["visibility"].to_pylist()]
        if "chat_id" in meta.column_names:
            chats = zip(meta["platform"].to_pylist(), meta["chat_id"].to_pylist(), strict=True)
            self._chat[start:end] = [self._code(f"{p}\x1f{c}") for p, c in chats]
        for offset, row_id in enumerate(meta["id"].to_pylist()):
            self.position[row_id] = start + offset
        self.meta = pa.concat_tables([self.meta, meta])
        if self.meta["id"].num_chunks > 32:
            self.meta = self.meta.combine_chunks()
        self.text.add(meta["text"].to_pylist())
        self.n = end
        self._masks.clear()
        self._order = None
        return len(fresh)

    def remove(self, ids: Iterable[str]) -> int:
        """Drop rows by id (the arrays are compacted and the text index rebuilt lazily)."""
        gone = {self.position[i] for i in ids if i in self.position}
        if not gone:
            return 0
        keep = np.ones(self.n, dtype=bool)
        keep[list(gone)] = False
        rows = np.flatnonzero(keep)
        self._vectors.keep(rows)
        self._time, self._role = self._time[rows].copy(), self._role[rows].copy()
        self._visibility, self._chat = self._visibility[rows].copy(), self._chat[rows].copy()
        self._order = None
        self.meta = self.meta.take(pa.array(rows)).combine_chunks()
        self.n = len(rows)
        self.position = {row_id: i for i, row_id in enumerate(self.meta["id"].to_pylist())}
        self.text.keep(keep)
        self._masks.clear()
        return len(gone)

    def where(self, predicate: Callable[[dict], bool], columns: list[str]) -> list[str]:
        """Ids of the rows a predicate over some columns accepts (edits find their rows)."""
        rows = self.meta.select(["id", *columns]).to_pylist()
        return [r["id"] for r in rows if predicate(r)]

    def _mask(
        self,
        scopes: Iterable[str],
        roles: Iterable[str] | None,
        since: datetime | None,
        until: datetime | None,
    ) -> np.ndarray:
        roles = tuple(roles) if roles is not None and self.table == "turns" else None
        key = (tuple(scopes), roles)
        base = self._masks.get(key)
        if base is None:  # held until the rows change: a person's scopes and roles rarely do
            base = self._allowed(key[0])[self._visibility[: self.n]]
            if roles is not None:
                base &= self._allowed(roles)[self._role[: self.n]]
            if len(self._masks) > 16:
                self._masks.clear()
            self._masks[key] = base
        mask = base.copy()
        if since is not None:
            mask &= self._time[: self.n] >= micros(since)
        if until is not None:
            mask &= self._time[: self.n] < micros(until)
        return mask

    def similarity(self, query: np.ndarray) -> np.ndarray:
        """Cosine of every row to a unit query, within COARSE_ERROR (`nearest` makes it exact)."""
        return self._vectors.coarse(query, self.n)

    def scores(self, terms: list[str]) -> np.ndarray:
        """BM25 of every row for the query's terms (0: no term occurs)."""
        return self.text.scores(terms) if terms else np.zeros(self.n, dtype=np.float32)

    def _allowed(self, values: Iterable[str]) -> np.ndarray:
        """A lookup table over the codes: True for the given values (a gather, not a search)."""
        table = np.zeros(max(len(self._codes), 1), dtype=bool)
        table[[self._codes[v] for v in values if v in self._codes]] = True
        return table

    def nearest(
        self,
        similarity: np.ndarray,
        query: np.ndarray,
        k: int,
        scopes: Iterable[str],
        *,
        roles: Iterable[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[tuple[int, float]]:
        """(row, cosine distance) of the k closest allowed rows, closest first: the 4k+32 best
        by the coarse cosines, scored exactly. A row can only be missed if more than that many
        rows are within COARSE_ERROR of it, i.e. it is as good as those returned to ~0.01."""
        if self.n == 0 or k <= 0:
            return []
        coarse = np.where(self._mask(scopes, roles, since, until), similarity, -np.inf)
        take = 4 * k + 32
        rows = np.argpartition(-coarse, take - 1)[:take] if take < len(coarse) else np.arange(len(coarse))
        rows = rows[np.isfinite(coarse[rows])]
        if not len(rows):
            return []
        exact = self._vectors.exact(rows) @ query
        order = np.argsort(-exact, kind="stable")[:k]
        return [(int(rows[i]), float(1.0 - exact[i])) for i in order]

    def matching(
        self,
        scores: np.ndarray,
        k: int,
        scopes: Iterable[str],
        *,
        roles: Iterable[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[tuple[int, float]]:
        """(row, -BM25) of the k best allowed rows that contain a query term, best first."""
        if self.n == 0:
            return []
        matched = np.flatnonzero(scores)  # usually a small part of the rows: rank only those
        matched = matched[self._mask(scopes, roles, since, until)[matched]]
        return [(int(matched[i]), d) for i, d in _top(scores[matched], k, lambda s: -s)]

    def rows(self, positions: list[int]) -> list[dict]:
        """The rows at these positions as dicts (times as UTC datetimes, converted here from
        integers: Arrow's own conversion of zoned timestamps costs more than the search)."""
        taken = self.meta.take(pa.array(positions, type=pa.int64()))
        columns = {}
        for name, column in zip(taken.column_names, taken.columns, strict=True):
            if pa.types.is_timestamp(column.type):
                columns[name] = [
                    None if us is None else _EPOCH + timedelta(microseconds=us)
                    for us in column.cast(pa.int64()).to_pylist()
                ]
            else:
                columns[name] = column.to_pylist()
        names = list(columns)
        return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]

    def last_in_chat(self, platform: str, chat_id: str, limit: int) -> list[dict]:
        """The newest `limit` rows of one chat, oldest first (as the turns of a conversation
        are ordered: by time, a person's message before the reply stamped the same moment)."""
        meta = self.meta
        mask = pc.and_(pc.equal(meta["platform"], platform), pc.equal(meta["chat_id"], chat_id))
        positions = np.flatnonzero(mask.to_numpy())
        if not len(positions):
            return []
        user = self._codes.get("user", -1)
        times, replies = self._time[positions], self._role[positions] != user
        order = np.lexsort((replies, times))[-limit:]
        return self.rows(positions[order].tolist())

    def _chat_order(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows by chat, then time (ties: stored order, as imports that date a whole session
        once have them), and each row's place in that order; built when first asked."""
        if self._order is None or len(self._order) != self.n:
            self._order = np.lexsort((np.arange(self.n), self._time[: self.n], self._chat[: self.n]))
            self._rank = np.empty(self.n, dtype=np.int64)
            self._rank[self._order] = np.arange(self.n)
        assert self._rank is not None
        return self._order, self._rank

    def around(
        self,
        positions: list[int],
        scopes: Iterable[str],
        roles: Iterable[str] | None,
        *,
        before: int,
        after: int,
        gap_us: int,
    ) -> dict[int, list[int]]:
        """Per row, the allowed rows said just before and after it in the same chat (oldest
        first, the row itself left out), none further than `gap_us` from the row: a session's
        neighbours, not the previous day's last words."""
        order, rank = self._chat_order()
        allowed = self._mask(scopes, roles, None, None)
        out: dict[int, list[int]] = {}
        for row in positions:
            found: list[int] = []
            for step, want in ((-1, before), (1, after)):
                taken, at = 0, int(rank[row]) + step
                while taken < want and 0 <= at < self.n:
                    other = int(order[at])
                    if (
                        self._chat[other] != self._chat[row]
                        or abs(self._time[other] - self._time[row]) > gap_us
                    ):
                        break
                    if allowed[other]:
                        found.append(other)
                        taken += 1
                    at += step
            out[row] = sorted(found, key=lambda r: int(rank[r]))
        return out

    def vectors(self, positions: list[int]) -> np.ndarray:
        """The rows' unit vectors (float32, exact to ~2^-16), one row per position."""
        return self._vectors.exact(np.asarray(positions, dtype=np.int64))

    def same(self, ids: pa.Array, texts: pa.Array, visibility: pa.Array) -> np.ndarray:
        """Per given row: whether this entry holds its id with the same text and visibility."""
        where = pc.index_in(ids, value_set=self.meta["id"].combine_chunks())
        held = where.is_valid().to_numpy(zero_copy_only=False)
        out = np.zeros(len(ids), dtype=bool)
        if held.any():
            at = where.filter(pa.array(held))
            out[held] = (
                pc.equal(self.meta["text"].combine_chunks().take(at), texts.filter(pa.array(held)))
                .fill_null(False)
                .to_numpy(zero_copy_only=False)
            ) & (
                pc.equal(self.meta["visibility"].combine_chunks().take(at), visibility.filter(pa.array(held)))
                .fill_null(False)
                .to_numpy(zero_copy_only=False)
            )
        return out

    def ids(self) -> pa.Array:
        return self.meta["id"].combine_chunks()


def _top(scores: np.ndarray, k: int, distance: Callable[[float], float]) -> list[tuple[int, float]]:
    """The k highest finite scores, highest first, with their distances."""
    if k <= 0 or not len(scores):
        return []
    best = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    best = best[np.isfinite(scores[best])]
    best = best[np.argsort(-scores[best], kind="stable")]
    return [(int(i), float(distance(float(scores[i])))) for i in best]


@dataclass
class Entry:
    """One person's rows, exact as of `versions` (per table)."""

    person_id: str
    parts: dict[str, Rows]
    versions: dict[str, int]
    nbytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def measure(self) -> int:
        self.nbytes = sum(p.nbytes for p in self.parts.values())
        return self.nbytes


def terms_of(text: str | None) -> list[str]:
    return analyse(text or "")


class SearchCache:
    """Entries by person, least recently used first, within `max_bytes` in all."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.lock = threading.RLock()
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._log: dict[str, OrderedDict[int, Op]] = {t: OrderedDict() for t in TABLES}
        self.bytes = 0

    def __contains__(self, person_id: str) -> bool:
        return person_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, person_id: str) -> Entry | None:
        with self.lock:
            entry = self._entries.get(person_id)
            if entry is not None:
                self._entries.move_to_end(person_id)
            return entry

    def put(self, entry: Entry) -> bool:
        """Hold an entry (replacing the person's previous one); False when it alone is too big."""
        with self.lock:
            self.drop(entry.person_id)
            if entry.measure() > self.max_bytes:
                return False
            self._entries[entry.person_id] = entry
            self.bytes += entry.nbytes
            self._evict()
            return entry.person_id in self._entries

    def resized(self, entry: Entry) -> None:
        """An entry grew or shrank: account for it, and evict others if over the bound."""
        with self.lock:
            if self._entries.get(entry.person_id) is not entry:
                return
            before = entry.nbytes
            self.bytes += entry.measure() - before
            self._evict(keep=entry.person_id)

    def _evict(self, keep: str | None = None) -> None:
        while self.bytes > self.max_bytes and self._entries:
            victim = next(iter(self._entries))
            if victim == keep:
                if len(self._entries) == 1:
                    self.drop(victim)
                    return
                self._entries.move_to_end(victim)
                continue
            self.drop(victim)

    def drop(self, person_id: str) -> None:
        with self.lock:
            entry = self._entries.pop(person_id, None)
            if entry is not None:
                self.bytes -= entry.nbytes

    def clear(self) -> None:
        with self.lock:
            self._entries.clear()
            self.bytes = 0

    def entries(self) -> list[Entry]:
        with self.lock:
            return list(self._entries.values())

    # -- the write log ------------------------------------------------------------------------

    def record(self, table: str, version: int | None, op: Op) -> None:
        """This process committed `version` of `table`, which changed rows as `op` does."""
        if version is None:
            return  # unknown to the log: entries re-read when they meet it
        with self.lock:
            log = self._log[table]
            log[int(version)] = op
            while len(log) > LOG_VERSIONS:
                log.popitem(last=False)

    def catch_up(self, entry: Entry, versions: dict[str, int]) -> list[str]:
        """Replay logged versions the entry has not seen; returns the tables it must re-read
        (a version missing from the log, or an op that cannot be replayed)."""
        stale = []
        with self.lock:
            replayed = False
            for table in TABLES:
                current = versions[table]
                seen = entry.versions[table]
                while seen < current:
                    op = self._log[table].get(seen + 1)
                    if op is None or not op(entry):
                        break
                    seen += 1
                    replayed = True
                entry.versions[table] = seen
                if seen < current:
                    stale.append(table)
            if replayed:
                self.resized(entry)
        return stale

    def remove_everywhere(self, table: str, ids: Iterable[str]) -> None:
        """Deleted rows leave every entry now (forgotten text does not wait in memory)."""
        ids = list(ids)
        with self.lock:
            for entry in self._entries.values():
                if entry.parts[table].remove(ids):
                    self.resized(entry)
