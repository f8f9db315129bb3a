"""The chat process's side of background work: the core's `Jobs`, implemented with Celery.

`after_turn` runs on the chat path, so it only counts and hands work to a sender thread: it
never touches the network, never blocks and never raises. The sender publishes; when the broker
is down it keeps the work in an outbox file in the data dir (deduplicated: consolidating a
person once covers every turn), says so in the log once, and replays the outbox when the broker
answers again — or at the next start, if the process stopped meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import structlog
from celery import Celery

from core import metrics
from core.config import Settings
from workers.app import (
    TASK_CONSOLIDATE,
    TASK_FORGET_PERSON,
    TASK_REFRESH_PROFILE,
    ensure_dirs,
    is_embedded,
    make_app,
    redacted_url,
)

log = structlog.get_logger(__name__)

Job = tuple[str, str]  # (task name, person id)
_STOP = ("", "")
_MAX_BACKOFF = 120.0


class Outbox:
    """Jobs that could not be published, kept on disk in order, each once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def load(self) -> list[Job]:
        with self._lock:
            return self._read()

    def _read(self) -> list[Job]:
        if not self.path.exists():
            return []
        jobs: OrderedDict[Job, None] = OrderedDict()
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                name, person = json.loads(line)
            except (ValueError, TypeError):
                log.warning("skipping an unreadable outbox line", path=str(self.path))
                continue
            jobs[(name, person)] = None
        return list(jobs)

    def add(self, job: Job) -> None:
        with self._lock:
            if job in self._read():
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as out:
                out.write(json.dumps(list(job)) + "\n")
                out.flush()
                os.fsync(out.fileno())

    def replace(self, jobs: list[Job]) -> None:
        with self._lock:
            if not jobs:
                self.path.unlink(missing_ok=True)
                return
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(list(j)) + "\n" for j in jobs), encoding="utf-8")
            os.replace(tmp, self.path)


class CeleryJobs:
    def __init__(self, settings: Settings, *, app: Celery | None = None, start_worker: bool = True) -> None:
        self.settings = settings
        ensure_dirs(settings)
        self.app = app or make_app(settings)
        self.outbox = Outbox(settings.data_dir / "broker" / "outbox.jsonl")
        self.embedded = None
        if is_embedded(settings) and start_worker:
            from workers.embedded import EmbeddedWorker

            self.embedded = EmbeddedWorker(settings)
            self.embedded.start()
        self._store: Any = None
        self._counts: dict[str, int] = {}
        self._counts_lock = threading.Lock()
        self._queue: queue.Queue[Job] = queue.Queue()
        self._down_since: float | None = None
        self._backoff = settings.outbox_retry_seconds
        self._next_try = 0.0
        self._published = 0
        self._request_ids: dict[str, str] = {}  # person -> the request that last asked for work
        self._flushes: dict[int, threading.Event] = {}
        self._thread = threading.Thread(target=self._run, name="confidante-jobs", daemon=True)
        self._thread.start()

    # -- the core's Jobs protocol (called on the chat path: cheap, never raises) ---------------

    def after_turn(self, person_id: str) -> None:
        try:
            request_id = structlog.contextvars.get_contextvars().get("request_id")
            if request_id:
                self._request_ids[person_id] = request_id
            with self._counts_lock:
                n = self._counts.get(person_id, 0) + 1
                due = n >= self.settings.consolidate_after_turns
                self._counts[person_id] = 0 if due else n
            self._queue.put(("refresh", person_id))
            if due:
                self._queue.put((TASK_CONSOLIDATE, person_id))
        except Exception as exc:  # the chat must go on whatever happens here
            log.error("could not defer background work", error=type(exc).__name__)

    def memory_changed(self, person_id: str) -> None:
        self._put((TASK_REFRESH_PROFILE, person_id))

    def forget_person(self, person_id: str) -> None:
        with self._counts_lock:
            self._counts.pop(person_id, None)
        self._put((TASK_FORGET_PERSON, person_id))

    # -- composition-root helpers ---------------------------------------------------------------

    def attach(self, store: Any) -> None:
        """Let the sender thread refresh the chat process's cached person after each turn, so a
        profile a worker wrote reaches the next prompt (off the chat path)."""
        self._store = store

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything handed over so far was published or put in the outbox."""
        done = threading.Event()
        self._flushes[id(done)] = done
        self._queue.put(("flush", str(id(done))))
        return done.wait(timeout)

    def close(self, *, drain: bool = True, worker_timeout: float = 30.0) -> None:
        """Publish what is pending; embedded: let the worker finish queued work, then stop it.

        People with turns counted but not yet consolidated (fewer than the trigger, or an
        import) are consolidated now rather than at the next idle sweep."""
        with self._counts_lock:
            leftover = [p for p, n in self._counts.items() if n > 0]
            self._counts.clear()
        for person_id in leftover:
            self._put((TASK_CONSOLIDATE, person_id))
        self.flush()
        self._queue.put(_STOP)
        self._thread.join(timeout=10)
        if self.embedded is not None:
            if drain and self._down_since is None:
                if self.embedded.pending() or self._published:
                    log.info("finishing background work before exit (Ctrl-C skips; it resumes next start)")
                with contextlib.suppress(KeyboardInterrupt):
                    self.embedded.drain(self.app, self.settings.worker_drain_seconds)
            self.embedded.stop(timeout=worker_timeout)

    @property
    def broker_down(self) -> bool:
        return self._down_since is not None

    # -- the sender thread ------------------------------------------------------------------------

    def _put(self, job: Job) -> None:
        try:
            self._queue.put(job)
        except Exception as exc:
            log.error("could not defer background work", error=type(exc).__name__)

    def _run(self) -> None:
        self._replay()
        while True:
            try:
                job = self._queue.get(timeout=1.0)
            except queue.Empty:
                job = None
            try:
                if job == _STOP:
                    return
                if job is not None and job[0] == "flush":
                    event = self._flushes.pop(int(job[1]), None)
                    if event is not None:
                        event.set()
                    continue
                if job is not None and job[0] == "refresh":
                    self._refresh(job[1])
                    continue
                if self.embedded is not None:
                    self.embedded.ensure_running()
                if self._down_since is not None and time.monotonic() >= self._next_try:
                    self._replay()
                if job is None:
                    continue
                if self._down_since is not None:
                    self._defer(job)
                    continue
                self._send(job)
            except Exception as exc:  # keep the thread alive whatever happens
                log.error("background work sender failed", error=type(exc).__name__)
                if job is not None and job[0] not in ("flush", "refresh"):
                    self.outbox.add(job)

    def _refresh(self, person_id: str) -> None:
        if self._store is not None:
            self._store.refresh_person(person_id)

    def _publish(self, job: Job) -> None:
        name, person_id = job
        request_id = self._request_ids.pop(person_id, None)
        # the worker binds it to its log lines (workers/observe.py): one id from message to task
        headers = {"request_id": request_id} if request_id else None
        self.app.send_task(name, args=[person_id], retry=False, headers=headers)
        metrics.JOBS.labels(task=name, outcome="published").inc()

    def _defer(self, job: Job) -> None:
        self.outbox.add(job)
        metrics.JOBS.labels(task=job[0], outcome="deferred").inc()

    def _send(self, job: Job) -> None:
        try:
            self._publish(job)
            self._published += 1
        except Exception as exc:
            self._defer(job)
            self._went_down(exc)

    def _went_down(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._backoff = self.settings.outbox_retry_seconds
            log.warning(
                "broker unreachable: chat goes on, background work is kept in the outbox and "
                "retried; start the broker (or unset CONFIDANTE_BROKER_URL for the embedded one)",
                broker=redacted_url(self.settings.broker_url),
                outbox=str(self.outbox.path),
                error=f"{type(exc).__name__}: {str(exc)[:160]}",
            )
        else:
            self._backoff = min(_MAX_BACKOFF, self._backoff * 2)
        self._next_try = now + self._backoff

    def _replay(self) -> None:
        """Publish the outbox in order; stop at the first failure and keep the rest."""
        jobs = self.outbox.load()
        if not jobs:
            if self._down_since is not None:
                self._back_up(0)
            return
        sent = 0
        for job in jobs:
            try:
                self._publish(job)
            except Exception as exc:
                self.outbox.replace(jobs[sent:])
                self._went_down(exc)
                return
            sent += 1
        self.outbox.replace([])
        self._published += sent
        self._back_up(sent)

    def _back_up(self, replayed: int) -> None:
        was_down = self._down_since is not None
        self._down_since = None
        if was_down or replayed:
            log.warning(
                "broker reachable again: deferred background work replayed",
                broker=redacted_url(self.settings.broker_url),
                replayed=replayed,
            )


def celery_jobs(settings: Settings, *, start_worker: bool = True) -> CeleryJobs:
    """The composition root's background work: Redis when configured, else embedded (with its
    worker subprocess unless `start_worker` is False: the work then waits in the queue folder)."""
    return CeleryJobs(settings, start_worker=start_worker)
