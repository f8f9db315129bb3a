"""One consolidation per person at a time, across every worker.

Redis broker: a Redis lock with a lease, renewed by a thread while the work runs, so a worker
that dies (SIGKILL, power loss) frees the person within one lease. Embedded broker: an
`flock` on a file in the data dir, which the kernel releases when the holding process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
import structlog

from core.config import Settings
from workers.app import broker_dir, is_embedded

log = structlog.get_logger(__name__)


def _name(person_id: str) -> str:
    return hashlib.sha256(person_id.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def lock_path(settings: Settings, person_id: str) -> Path:
    return broker_dir(settings) / "locks" / f"{_name(person_id)}.lock"


@contextmanager
def person_lock(settings: Settings, person_id: str, *, wait: float = 2.0) -> Iterator[bool]:
    """Yields True when this process holds the person's lock, False when someone else does."""
    if is_embedded(settings):
        with _file_lock(lock_path(settings, person_id), wait) as held:
            yield held
    else:
        with _redis_lock(settings, person_id, wait) as held:
            yield held


@contextmanager
def _file_lock(path: Path, wait: float) -> Iterator[bool]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.05)
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def _redis_lock(settings: Settings, person_id: str, wait: float) -> Iterator[bool]:
    client = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=settings.broker_connect_timeout)
    lease = max(3, settings.consolidate_lock_seconds)
    lock = client.lock(
        f"confidante:lock:consolidate:{_name(person_id)}",
        timeout=lease,
        blocking_timeout=wait,
        thread_local=False,
    )
    if not lock.acquire():
        client.close()
        yield False
        return
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease / 3):
            try:
                lock.extend(lease, replace_ttl=True)
            except Exception as exc:  # lost the lease: the work still finishes idempotently
                log.warning("could not renew a person lock", error=type(exc).__name__)
                return

    keeper = threading.Thread(target=renew, name="lock-renew", daemon=True)
    keeper.start()
    try:
        yield True
    finally:
        stop.set()
        keeper.join(timeout=5)
        with contextlib.suppress(Exception):  # expired meanwhile: nothing to release
            lock.release()
        client.close()
