"""Turns (what was said): staging through the journal, reading a person's or a chat's turns,
edits, and the bulk appends of an import."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import structlog

from core.memory import filters as f
from core.memory.embed import DIM
from core.memory.hot import TABLES, Entry
from core.memory.records import Turn
from core.memory.store.base import StoreBase
from core.memory.store.schema import (
    _TURN_COLUMNS,
    SCHEMAS,
    _ts_literal,
    _turn,
    _vectors,
    _with_staged,
)
from core.memory.writer import Journal, JournalBusy, TurnWriter

log = structlog.get_logger(__name__)


class Turns(StoreBase):
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

    def adopt_journal(self) -> bool:
        """Take the turn journal over once the process that owned it is gone (another chat
        process on this data dir stopped or was killed): what it left is written to LanceDB
        now, and this process records through it from here on."""
        if self._writer is not None or self._journal_path is None:
            return False
        self._writer = self._open_writer(self._journal_path, quiet=True)
        return self._writer is not None

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

    def turns_by_ids(
        self, ids: Iterable[str], *, with_vectors: bool = False, settle: bool = True
    ) -> list[Turn]:
        """The stored turns with these ids. `settle=False` reads what LanceDB has without
        waiting for staged writes: recall asks for a memory's source turns, which were stored
        before consolidation read them, and must not wait on a commit."""
        ids = list(ids)
        if not ids:
            return []
        if settle:
            self.settle()
        columns = [*_TURN_COLUMNS, "vector"] if with_vectors else _TURN_COLUMNS
        rows = self._rows("turns", f.is_in("id", ids), columns)
        turns = [_turn(r) for r in rows]
        if with_vectors:
            for turn, row in zip(turns, rows, strict=True):
                turn.vector = list(row["vector"])
        return turns

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

    # -- imports ----------------------------------------------------------------------------

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
