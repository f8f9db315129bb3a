"""The Celery app and the broker choice.

`CONFIDANTE_BROKER_URL=redis://…`: Redis, with workers started by `confidante worker` anywhere
that sees the same data dir (or object-store URI).

Unset: an embedded broker, kombu's filesystem transport in `<data_dir>/broker/queue`, consumed
by a worker subprocess that `confidante run`/`chat` start themselves (workers/embedded.py).
A folder needs no server, survives restarts (queued work waits on disk), and is the same Celery
path as production: the very same tasks, acks, retries and beat. A worker *subprocess* rather
than a thread keeps consolidation (embedding, LanceDB compaction) off the chat process's GIL
and its embedder lock, so the chat path does not slow down while it runs.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from celery import Celery

from core.config import Settings, get_settings

QUEUE = "confidante"
# adapter training on a queue of its own: a GPU worker machine takes it (`confidante worker
# --queues adapters`) while CPU workers keep consolidating
QUEUE_ADAPTERS = "adapters"

TASK_CONSOLIDATE = "confidante.consolidate"
TASK_REFRESH_PROFILE = "confidante.refresh_profile"
TASK_FORGET_PERSON = "confidante.forget_person"
TASK_SWEEP = "confidante.sweep"
TASK_COMPACT = "confidante.compact"
TASK_DRAINED = "confidante.drained"
TASK_REFRESH_ADAPTER = "confidante.refresh_adapter"


def is_embedded(settings: Settings) -> bool:
    return not settings.broker_url


def broker_dir(settings: Settings) -> Path:
    return settings.data_dir / "broker"


def queue_dir(settings: Settings) -> Path:
    return broker_dir(settings) / "queue"


def redacted_url(url: str | None) -> str:
    """The broker URL without its password, for logs and error messages."""
    if not url:
        return "embedded"
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("confidante", include=["workers.tasks"])
    conf: dict = {
        "task_acks_late": True,  # a task killed mid-way is delivered again
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_default_queue": QUEUE,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": settings.broker_connect_timeout,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "timezone": "UTC",
        "beat_schedule": {
            "sweep-idle-people": {"task": TASK_SWEEP, "schedule": timedelta(seconds=settings.sweep_seconds)},
            "compact-tables": {"task": TASK_COMPACT, "schedule": timedelta(seconds=settings.compact_seconds)},
        },
        "beat_schedule_filename": str(broker_dir(settings) / "beat-schedule"),
    }
    if is_embedded(settings):
        folder = queue_dir(settings)  # created by whoever starts a worker or sends work
        conf.update(
            broker_url="filesystem://",
            broker_transport_options={
                "data_folder_in": str(folder),
                "data_folder_out": str(folder),
                "store_processed": False,
                # its exchange tables (one `<exchange>.exchange` per bound queue: confidante and
                # adapters); kombu's default is ./control in whatever directory the process started
                "control_folder": str(folder.parent / "control"),
            },
            # remote control and events would poll the folder for nothing: no worker needs them here
            worker_enable_remote_control=False,
            worker_send_task_events=False,
        )
    else:
        conf.update(
            broker_url=settings.broker_url,
            # embedded mode keeps one queue: its single worker takes both, and `drained` relies
            # on everything queued before the marker being in front of it
            task_routes={TASK_REFRESH_ADAPTER: {"queue": QUEUE_ADAPTERS}},
            broker_transport_options={
                "visibility_timeout": settings.broker_visibility_timeout,
                "unacked_restore_interval": settings.broker_restore_interval,
                "unacked_restore_throttle": 1,
                "socket_connect_timeout": settings.broker_connect_timeout,
                "socket_timeout": max(5.0, settings.broker_connect_timeout),
            },
        )
    app.conf.update(conf)
    app.confidante_settings = settings
    return app


def ensure_dirs(settings: Settings) -> None:
    broker_dir(settings).mkdir(parents=True, exist_ok=True)
    if is_embedded(settings):
        queue_dir(settings).mkdir(parents=True, exist_ok=True)


app = make_app()
