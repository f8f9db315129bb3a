"""Checks of a deployment's parts, shared by /readyz (app/ops_http.py) and `confidante doctor`.

Each check returns None when the part works, else one sentence saying what is wrong and what to
do. They are blocking and bounded by short timeouts: callers run them in threads.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from core.config import BUNDLED_MODEL, Settings


def data_dir(settings: Settings) -> str | None:
    """The data dir is a directory, private, and writable (or can be created: the first start
    creates it, mode 0700)."""
    path = settings.data_dir
    if path.exists() and not path.is_dir():
        return f"CONFIDANTE_DATA_DIR={path} is a file, not a directory: point it at a directory"
    if not path.exists():
        parent = next((p for p in path.absolute().parents if p.exists()), Path("/"))
        problem = _probe(parent)
        if problem:
            return f"cannot create the data dir {path} in {parent} ({problem}): create it, owned by this user"
        return None
    problem = _probe(path)
    if problem:
        return f"the data dir {path} is not writable ({problem}): chown it to the user Confidante runs as"
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        return (
            f"the data dir {path} is readable by other users (mode {mode:o}); it holds what people "
            f"told the bot: chmod 700 {path}"
        )
    return None


def store(path: Path | None, store_obj: Any = None) -> str | None:
    """LanceDB's folder takes a new file (a store on object storage has no folder to probe),
    and (in a running chat process) the turn writer's commits are not failing."""
    if path is None:
        failing = getattr(store_obj, "write_problem", lambda: None)()
        return f"writing turns to the store fails: {failing}; they wait in the journal" if failing else None
    if not path.is_dir():
        return f"the store {path} is missing or not a directory: restore it from a backup or free the path"
    problem = _probe(path)
    if problem:
        return f"the store {path} is not writable ({problem}): check free disk space and ownership"
    failing = getattr(store_obj, "write_problem", lambda: None)()
    if failing:
        return f"writing turns to the store fails: {failing}; they wait in the journal"
    return None


def broker(settings: Settings) -> str | None:
    from workers.broker import check

    return check(settings)


def model(settings: Settings) -> str | None:
    """The configured model can be found (without loading it: that takes seconds and memory), or
    the generation server answers when generation is remote."""
    if settings.generation_url:
        from core.llm.remote import server_problem

        return server_problem(settings)
    from core.llm import model as m

    try:
        if settings.model.strip() == BUNDLED_MODEL:
            m.bundled_gguf()
        else:
            m._resolve_source(settings)
    except m.ModelLoadError as exc:
        return str(exc)
    return None


def engine(engine_obj: Any) -> str | None:
    """A running engine: one that can say whether it is healthy (a remote generation server's
    client) is asked; a local one is ready once loaded, which it is when it exists."""
    if engine_obj is None:
        return "no model is loaded"
    health = getattr(engine_obj, "health", None)
    if callable(health):
        return health()
    if getattr(engine_obj, "_stopping", False):
        return "the engine was closed: restart the process"
    return None


def _probe(folder: Path) -> str | None:
    """Create, write and delete a file: the only test that means writable for root as well."""
    probe = folder / f".probe-{uuid.uuid4().hex}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None
