"""What a worker reports about its tasks: outcome counters and durations (core/metrics.py), and
the request id of the message that asked for the task, bound to every log line the task writes.

Celery signals rather than code in each task: every task, present and future, is covered.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from celery import signals

from core import metrics

_started: dict[str, float] = {}


@signals.task_prerun.connect
def _prerun(task_id: str = "", task: Any = None, **_: Any) -> None:
    _started[task_id] = time.perf_counter()
    request_id = getattr(task.request, "request_id", None) if task is not None else None
    structlog.contextvars.clear_contextvars()
    if request_id:
        structlog.contextvars.bind_contextvars(request_id=request_id)


@signals.task_postrun.connect
def _postrun(task_id: str = "", task: Any = None, state: str | None = None, **_: Any) -> None:
    name = getattr(task, "name", "unknown")
    started = _started.pop(task_id, None)
    if started is not None:
        metrics.TASK_SECONDS.labels(task=name).observe(time.perf_counter() - started)
    outcome = {"SUCCESS": "succeeded", "RETRY": "retried"}.get(state or "", "failed")
    metrics.TASKS.labels(task=name, outcome=outcome).inc()
    structlog.contextvars.clear_contextvars()
