"""The embedded broker's worker: a subprocess of `confidante run`/`chat` that consumes the
filesystem queue in the data dir, with beat, exactly like `confidante worker` does for Redis.

It runs only on CPU time the chat does not want (SCHED_IDLE on Linux, else nice 19, and one
thread per math library), dies with its parent (PR_SET_PDEATHSIG on Linux), logs to
`<data_dir>/broker/worker.log`,
and queued work that it did not reach stays on disk for the next start.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import structlog

from core.config import Settings
from workers.app import broker_dir, ensure_dirs, queue_dir

log = structlog.get_logger(__name__)

_PROJECT_ROOT = Path(__file__).resolve().parent.parent

# The settings a worker needs; the rest (platform tokens) never leave the chat process.
WORKER_SETTINGS = (
    "data_dir",
    "model",
    "device",
    "dtype",
    "extractor",
    "log_level",
    "log_content",
    "consolidate_after_turns",
    "consolidate_idle_seconds",
    "consolidate_lock_seconds",
    "consolidate_write_delay_seconds",
    "sweep_seconds",
    "compact_seconds",
    "search_cache_mb",
    "search_cache_sync_rows",
    "default_timezone",  # follow-ups (core/reminders/followups.py) for people who set no zone
)


# torch sets its own thread count in the worker (workers/worker.py); these cover BLAS and OpenMP.
_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDANTE_")}
    for name in WORKER_SETTINGS:
        value = getattr(settings, name)
        env[f"CONFIDANTE_{name.upper()}"] = str(value.resolve() if isinstance(value, Path) else value)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PROJECT_ROOT), env.get("PYTHONPATH", "")]))
    for name in _ONE_THREAD:  # a second busy thread would take the core the chat is waiting for
        env.setdefault(name, "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def _child_setup() -> None:
    """In the worker before exec: die with the parent, and yield the CPU to the chat process.

    Background work on the same machine must not slow replies. A nice value only shares the
    CPU unevenly (nice 10 still takes a tenth of a contended core, and wakes up to run its
    slice while a reply waits); SCHED_IDLE runs the worker only when no normal process wants
    the CPU, and every thread it starts inherits that. Consolidation then waits for quiet
    moments, which is what background work is for.
    """
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    with contextlib.suppress(OSError):
        os.nice(19)  # where SCHED_IDLE is missing; the lowest priority there is
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedWorker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped = False
        self.log_path = broker_dir(settings) / "worker.log"

    def start(self) -> None:
        ensure_dirs(self.settings)
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workers.worker", "--embedded"],
            env=worker_env(self.settings),
            cwd=str(_PROJECT_ROOT),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_child_setup if os.name == "posix" else None,
        )
        log_file.close()
        log.info("embedded worker started", pid=self.proc.pid, log=str(self.log_path))

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure_running(self) -> None:
        """Restart a worker that died (not one that was stopped on purpose)."""
        if not self.alive and not self.stopped:
            if self.proc is not None:
                log.warning("embedded worker exited; restarting", code=self.proc.returncode)
            self.start()

    def drain(self, app, timeout: float) -> bool:
        """Wait until everything queued so far has run (a marker task queued last runs)."""
        if not self.alive:
            return False
        token = uuid.uuid4().hex
        marker = broker_dir(self.settings) / "drained" / token
        app.send_task("confidante.drained", args=[token], retry=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive:
            if marker.exists():
                marker.unlink(missing_ok=True)
                return True
            time.sleep(0.2)
        return False

    def pending(self) -> int:
        folder = queue_dir(self.settings)
        return sum(1 for p in folder.glob("*.msg")) if folder.exists() else 0

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown: the current task finishes; queued ones wait on disk."""
        self.stopped = True
        if not self.alive:
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("embedded worker did not stop in time; killing it (its task re-runs later)")
            self.proc.kill()
            self.proc.wait(timeout=10)
