"""What several chat processes on one store rely on (infra/README.md, "Several chat processes"):
LanceDB tables written by processes at once, on a local disk, lose no commit. Three processes
append turns, update the same few existing keys by merge-insert (people, chat settings) and
delete rows, all on one table; every call succeeds (a commit that races another is rebased and
retried by Lance), no existing key is stored twice, and every append that was not deleted is
there. (Two processes inserting the same *new* key at once can both insert it: merge-insert
checks and commits without a lock. The chat processes never race on a new key that matters:
a message's turns have one owner; infra/README.md says which rows can be doubled.)"""

from __future__ import annotations

import multiprocessing as mp

import lancedb
import pyarrow as pa

PROCESSES = 3
ROUNDS = 15  # each round: 3 appends, 2 updates, 1 delete -> 6 commits


def _writer(uri: str, n: int, out) -> None:
    table = lancedb.connect(uri).open_table("t")
    errors = []
    for i in range(ROUNDS * 6):
        try:
            op = i % 6
            if op < 3:
                table.add(pa.table({"id": [f"{n}-{i}"], "v": [i]}))
            elif op < 5:
                row = pa.table({"id": [f"shared-{i % 5}"], "v": [n * 1000 + i]})
                table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(row)
            else:
                table.delete(f"id = '{n}-{i - 5}'")
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
    out.put((n, errors))


def test_three_processes_write_one_table_at_once_and_lose_no_commit(tmp_path):
    uri = str(tmp_path / "db")
    schema = pa.schema([("id", pa.string()), ("v", pa.int64())])
    existing = pa.table({"id": [f"shared-{k}" for k in range(5)], "v": [0] * 5}, schema=schema)
    lancedb.connect(uri).create_table("t", data=existing)
    ctx = mp.get_context("spawn")  # LanceDB's background threads do not survive a fork
    out = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(uri, n, out)) for n in range(PROCESSES)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(60)
    assert all(not errors for errors in results.values()), results
    ids = [r["id"] for r in lancedb.connect(uri).open_table("t").to_arrow().to_pylist()]
    assert len(ids) == len(set(ids)), "an updated key was stored twice"
    appended = {i for i in ids if not i.startswith("shared")}
    assert len(appended) == PROCESSES * ROUNDS * 2  # 3 appends - 1 delete per round
    assert {i for i in ids if i.startswith("shared")} == {f"shared-{k}" for k in range(5)}
