"""Adapter training has a Celery queue of its own, so a GPU machine's worker can take it alone."""

from __future__ import annotations

import re
import time

from tests.workers.conftest import REDIS_URL, wait_for
from workers.app import QUEUE, QUEUE_ADAPTERS, TASK_REFRESH_ADAPTER, make_app


def test_refresh_goes_to_the_adapters_queue_and_only_its_worker_takes_it(
    settings, redis_db, spawn_worker, tmp_path
):
    settings = settings.model_copy(update={"broker_url": REDIS_URL})
    app = make_app(settings)
    app.send_task(TASK_REFRESH_ADAPTER, args=["nobody-yet"])
    assert redis_db.llen(QUEUE_ADAPTERS) == 1 and redis_db.llen(QUEUE) == 0

    cpu_log = tmp_path / "cpu-worker.log"
    spawn_worker(settings, cpu_log, "--no-beat", "--queues", QUEUE)
    wait_for(lambda: "ready" in cpu_log.read_text(errors="replace"), 60, "the CPU worker", cpu_log)
    time.sleep(1.0)
    assert redis_db.llen(QUEUE_ADAPTERS) == 1, "a consolidation-only worker must leave training alone"

    gpu_log = tmp_path / "gpu-worker.log"
    spawn_worker(settings, gpu_log, "--no-beat", "--queues", QUEUE_ADAPTERS)
    skipped = re.compile(r'status(=|": ")skipped')  # key=value on a terminal, JSON otherwise
    wait_for(lambda: skipped.search(gpu_log.read_text(errors="replace")), 60, "the refresh", gpu_log)
    assert redis_db.llen(QUEUE_ADAPTERS) == 0
