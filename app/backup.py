"""`confidante backup` / `confidante restore`: the data dir as one archive, taken while the bot runs.

What a consistent backup holds: every turn accepted before it started (the journal is copied
first, then each table as of its latest version: a turn leaves the journal only once LanceDB
holds it, so it is in one or the other; the journal's replay skips ids already stored), the
tables at one moment each (core/memory/snapshot.py), and the other state people's data depends
on: adapters, platform credentials and sync state, deferred background work. Left out: the
converted model (rebuilt at start) and the broker's queue (deferred work is in the outbox).

The archive holds everything people told the bot: it is written mode 0600; keep it private.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from core.config import Settings
from core.memory.snapshot import cleanup_guard, copy_tables

FORMAT = 1
SKIP_DIRS = {"models", "lancedb", "journal", "queue", "control", "drained"}
SKIP_SUFFIXES = (".lock", ".tmp", ".log", ".partial")


class BackupRefused(Exception):
    """The store is not in the data dir (object storage): its own snapshots back it up."""


class RestoreRefused(Exception):
    """Restoring would overwrite live or existing data; the message says what to do."""


def backup(settings: Settings, archive: Path) -> dict:
    """Write `archive` (.tar.gz) from the data dir; returns what it holds (tables and versions)."""
    data = settings.data_dir
    if settings.store_path != data / "lancedb":
        raise BackupRefused(
            f"the store is at {settings.store_location} (CONFIDANTE_STORE_URI), not in the data dir: "
            "back it up with that storage's own snapshots or versioning; `confidante backup` "
            "copies a store inside the data dir"
        )
    if not (data / "lancedb").is_dir():
        raise FileNotFoundError(f"{data / 'lancedb'} does not exist: nothing to back up in {data}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".backup-", dir=archive.parent) as tmp:
        stage = Path(tmp) / "data"
        stage.mkdir(mode=0o700)
        journal = data / "journal" / "turns.jsonl"
        if journal.exists():  # first: whatever leaves it afterwards is in the tables copied next
            (stage / "journal").mkdir()
            shutil.copy2(journal, stage / "journal" / "turns.jsonl")
        with cleanup_guard(data / "lancedb", shared=True):
            versions = copy_tables(data / "lancedb", stage / "lancedb")
        _copy_rest(data, stage)
        counts = _verify(stage / "lancedb")
        manifest = {
            "format": FORMAT,
            "created_at": datetime.now(UTC).isoformat(),
            "versions": versions,
            "rows": counts,
            "journal_turns": _lines(stage / "journal" / "turns.jsonl"),
        }
        (stage / "BACKUP.json").write_text(json.dumps(manifest, indent=2))
        partial = archive.with_name(archive.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            tar.add(stage, arcname="data")
        os.replace(partial, archive)
    manifest["seconds"] = round(time.perf_counter() - started, 2)
    return manifest


def restore(settings: Settings, archive: Path, *, force: bool = False) -> Path | None:
    """Unpack `archive` as the data dir. A data dir in use is refused; an existing one is moved
    aside (returned) only with `force`, and only once the archive unpacked and read well.
    The next start replays the restored journal."""
    data = settings.data_dir
    if in_use(data):
        raise RestoreRefused(
            f"a chat process is running on {data}: stop it first (systemctl stop confidante)"
        )
    if data.exists() and any(data.iterdir()) and not force:
        raise RestoreRefused(f"{data} is not empty: pass --force to move it aside and restore over it")
    data.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=data.parent) as tmp:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, filter="data")  # no absolute paths, links out or devices
        except (OSError, tarfile.TarError) as exc:
            raise RestoreRefused(f"cannot read {archive} ({exc}); nothing was changed") from exc
        unpacked = Path(tmp) / "data"
        if not (unpacked / "BACKUP.json").exists():
            raise RestoreRefused(
                f"{archive} is not a Confidante backup (no BACKUP.json); nothing was changed"
            )
        _verify(unpacked / "lancedb")
        aside = None
        if data.exists() and any(data.iterdir()):
            aside = data.with_name(f"{data.name}.before-restore-{datetime.now(UTC):%Y%m%dT%H%M%S}")
            data.rename(aside)
        elif data.exists():
            data.rmdir()
        unpacked.rename(data)
    data.chmod(0o700)
    return aside


def _copy_rest(data: Path, stage: Path) -> None:
    """Everything but the tables, the journal, the model cache and transient broker folders."""
    for folder, dirs, files in os.walk(data):
        rel = Path(folder).relative_to(data)
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        for name in files:
            if name.endswith(SKIP_SUFFIXES) or name.startswith("."):
                continue
            (stage / rel).mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                shutil.copy2(Path(folder) / name, stage / rel / name)
            except FileNotFoundError:  # removed meanwhile (an adapter version replaced)
                continue


def _verify(lancedb_dir: Path) -> dict[str, int]:
    """Open every copied table and read its rows: a backup that cannot be read is no backup."""
    import lancedb

    db = lancedb.connect(str(lancedb_dir))
    counts = {}
    for name in db.table_names():
        table = db.open_table(name)
        first = table.schema.names[0]
        counts[name] = len(table.search().select([first]).limit(10_000_000).to_arrow())
    return counts


def _lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def in_use(data: Path) -> bool:
    """Whether a chat process owns this data dir's journal right now."""
    import fcntl

    lock = data / "journal" / "turns.lock"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
