"""A consistent copy of the LanceDB tables while the chat process and workers keep writing.

Why this works: a Lance table is a folder of immutable data and index files plus one manifest
per version (`_versions/`), and a version is visible only once its manifest exists. So a copy
of "every file, minus the manifests newer than the version we read" is that version exactly,
whatever is written meanwhile. Only deleting old files could break it (compaction and purges
clean up versions): `cleanup_guard` is a file lock the store takes exclusively around them and
a snapshot takes shared, so no version's files disappear while it is being copied.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

GUARD_NAME = ".cleanup.lock"
_U64 = 2**64 - 1


@contextlib.contextmanager
def cleanup_guard(uri: str | Path, *, shared: bool = False) -> Iterator[None]:
    """Held exclusively around anything that deletes old table files, shared by snapshots.
    Object-store URIs have no local lock: there, take snapshots with the bucket's versioning."""
    path = Path(str(uri))
    if "://" in str(uri) or not path.is_dir():
        yield
        return
    fd = os.open(path / GUARD_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def manifest_version(name: str) -> int | None:
    """The version a manifest file name stands for (Lance's V2 names count down from 2**64-1)."""
    stem, _, ext = name.partition(".")
    if ext != "manifest" or not stem.isdigit():
        return None
    n = int(stem)
    return _U64 - n if n > 2**63 else n


def latest_version(table_dir: Path) -> int:
    versions = [v for p in (table_dir / "_versions").iterdir() if (v := manifest_version(p.name)) is not None]
    if not versions:
        raise RuntimeError(f"{table_dir} has no manifest: it is not a Lance table")
    return max(versions)


def copy_tables(source: Path, target: Path) -> dict[str, int]:
    """Copy every table under `source` (a LanceDB folder) to `target` as of its latest version
    when the copy starts; returns table -> version copied. Hold `cleanup_guard(source, shared=True)`."""
    target.mkdir(parents=True, exist_ok=True)
    tables = sorted(p for p in source.iterdir() if p.is_dir() and p.name.endswith(".lance"))
    # read every table's version first: the tables then come from (nearly) one moment
    versions = {p.name: latest_version(p) for p in tables}
    for table in tables:
        upto = versions[table.name]
        for folder, _dirs, files in os.walk(table):
            rel = Path(folder).relative_to(source)
            for name in files:
                version = manifest_version(name)
                if (version is not None and version > upto) or name == "latest_version_hint.json":
                    continue  # a later version (and the hint naming it) is not part of this copy
                (target / rel).mkdir(parents=True, exist_ok=True)
                # a temporary file of a commit in progress may go away: never one of the copy's
                with contextlib.suppress(FileNotFoundError):
                    shutil.copy2(Path(folder) / name, target / rel / name)
    return {name.removesuffix(".lance"): v for name, v in versions.items()}
