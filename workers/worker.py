"""Start a Celery worker (and, by default, beat) for the configured broker.

`confidante worker` calls `run_worker`; the embedded broker's subprocess is
`python -m workers.worker --embedded`.
"""

from __future__ import annotations

import argparse
import logging
import sys

import structlog

from core.config import Settings, get_settings
from workers.app import QUEUE, QUEUE_ADAPTERS, app, ensure_dirs, is_embedded, redacted_url

ALL_QUEUES = (QUEUE, QUEUE_ADAPTERS)


def _logging(settings: Settings) -> None:
    """The chat process's logging: secrets scrubbed, JSON lines when not on a terminal, and the
    context (a task's request id, workers/observe.py) on every line."""
    from core import logsafety

    number = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    logging.basicConfig(level=number, stream=sys.stderr, format="%(message)s")
    as_json = settings.log_json == "true" or (settings.log_json == "auto" and not sys.stderr.isatty())
    structlog.configure(
        processors=logsafety.processors(settings, logsafety.json_renderer() if as_json else None),
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )
    for noisy in ("sentence_transformers", "transformers", "httpx"):
        logging.getLogger(noisy).setLevel(max(number, logging.WARNING))


def _one_thread() -> None:
    """One intra-op thread per worker process: background work must leave the other cores to the
    chat process (and torch's default of one thread per core thrashes on a busy machine)."""
    import torch

    torch.set_num_threads(1)


def worker_argv(
    *, beat: bool, loglevel: str, concurrency: int = 1, queues: tuple[str, ...] = ALL_QUEUES
) -> list[str]:
    argv = [
        "worker",
        "--queues",
        ",".join(queues),
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    argv += (
        ["--pool", "solo"] if concurrency <= 1 else ["--pool", "prefork", "--concurrency", str(concurrency)]
    )
    if beat:
        argv += ["--beat"]
    return argv


def run_worker(*, beat: bool = True, concurrency: int = 1, queues: tuple[str, ...] = ALL_QUEUES) -> None:
    """Blocks until the worker stops (SIGTERM: finish the current task, then stop)."""
    settings = app.confidante_settings
    _logging(settings)
    _one_thread()
    ensure_dirs(settings)
    structlog.get_logger(__name__).info(
        "worker starting",
        broker=redacted_url(settings.broker_url),
        beat=beat,
        concurrency=concurrency,
        queues=",".join(queues),
    )
    app.worker_main(
        worker_argv(beat=beat, loglevel=settings.log_level, concurrency=concurrency, queues=queues)
    )


def run_beat() -> None:
    """The scheduler alone: one per deployment, or the periodic work runs once per beat."""
    settings = app.confidante_settings
    _logging(settings)
    ensure_dirs(settings)
    structlog.get_logger(__name__).info("beat starting", broker=redacted_url(settings.broker_url))
    app.start(["beat", "--loglevel", settings.log_level])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--embedded", action="store_true", help="the embedded broker's worker")
    parser.add_argument("--no-beat", action="store_true")
    args = parser.parse_args()
    if not args.embedded and is_embedded(get_settings()):
        sys.exit("CONFIDANTE_BROKER_URL is not set; pass --embedded for the data dir's broker.")
    run_worker(beat=not args.no_beat)


if __name__ == "__main__":
    main()
