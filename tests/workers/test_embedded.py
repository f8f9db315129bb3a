"""No Redis: `confidante run` (and `chat`) start the embedded broker and worker themselves."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import app.cli as cli
from core.assistant import Assistant
from core.config import get_settings
from core.memory.store import Store, open_store
from workers.app import broker_dir
from workers.embedded import EmbeddedWorker
from workers.jobs import CeleryJobs
from workers.locks import person_lock
from workers.worker import ALL_QUEUES


@pytest.mark.parametrize("command", ["run"])  # `chat` shares the wiring (app/cli.py)
def test_cli_runs_the_same_tasks_through_the_embedded_broker(
    command, tmp_path, monkeypatch, embedder, tiny_engine
):
    data = tmp_path / "data"
    for key in list(__import__("os").environ):
        if key.startswith(("CONFIDANTE_", "TELEGRAM_", "SLACK_", "MATRIX_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CONFIDANTE_DATA_DIR", str(data))
    monkeypatch.setenv("CONFIDANTE_WORKER_DRAIN_SECONDS", "300")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    get_settings.cache_clear()
    built: dict = {}

    def assistant_with_tiny_model(settings, *, jobs=None):
        assert isinstance(jobs, CeleryJobs) and jobs.embedded is not None  # the real wiring
        built["store"] = open_store(
            settings, journal=True
        )  # the chat process's store: turns go through its journal
        return Assistant(settings, built["store"], tiny_engine, jobs=jobs)

    monkeypatch.setattr(cli, "_assistant", assistant_with_tiny_model)
    lines = "I live in Berlin.\nI'm a nurse.\nI moved to Porto.\nI love surfing.\n"
    try:
        result = CliRunner().invoke(cli.app, [command], input=lines, catch_exceptions=False)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    person = built["store"].person_for("console", getpass.getuser())
    store = Store(data / "lancedb", embedder)
    texts = {m.text for m in store.memories_of(person)}
    worker_log = (broker_dir(get_settings().model_copy(update={"data_dir": data})) / "worker.log").read_text()
    assert {"Lives in Porto", "Works as a nurse", "Likes surfing"} <= texts, worker_log[-3000:]
    assert "Lives in Porto" in store.person(person).profile
    assert "celery@" in worker_log and "confidante.consolidate" in worker_log
    assert not list((data / "broker" / "queue").glob("*.msg"))  # nothing left behind
    assert list((data / "broker" / "control").glob("*.exchange"))  # kombu's fanout table, in the data dir
    assert not list(cwd.iterdir())  # nothing written where the command was started


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_embedded_worker_runs_only_on_idle_cpu(settings):
    """Consolidation must not slow the chat path: the worker takes only CPU nobody else wants."""
    worker = EmbeddedWorker(settings)
    worker.start()
    try:
        pid = worker.proc.pid
        assert os.sched_getscheduler(pid) == os.SCHED_IDLE
        environ = dict(
            item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item
        )
        assert environ["OMP_NUM_THREADS"] == "1" and environ["OPENBLAS_NUM_THREADS"] == "1"
    finally:
        worker.stop(timeout=60)


def test_embedded_person_lock_excludes_a_second_holder(settings):
    with person_lock(settings, "dana") as first:
        assert first
        with person_lock(settings, "dana", wait=0.2) as second:
            assert not second
        with person_lock(settings, "omar", wait=0.2) as other:
            assert other
    with person_lock(settings, "dana", wait=0.2) as again:
        assert again


def test_redis_person_lock_excludes_a_second_holder(settings, redis_db):
    from tests.workers.conftest import REDIS_URL

    settings = settings.model_copy(update={"broker_url": REDIS_URL, "consolidate_lock_seconds": 3})
    with person_lock(settings, "dana") as first:
        assert first
        __import__("time").sleep(4)  # longer than the lease: the renewal keeps it
        with person_lock(settings, "dana", wait=0.2) as second:
            assert not second
    with person_lock(settings, "dana", wait=0.2) as again:
        assert again


def test_worker_command_without_a_broker_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delenv("CONFIDANTE_BROKER_URL", raising=False)
    monkeypatch.setenv("CONFIDANTE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli.app, ["worker"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "CONFIDANTE_BROKER_URL" in result.output and "confidante run" in result.output


def test_import_queues_the_history_consolidation_without_starting_a_worker(monkeypatch, tmp_path):
    import json

    for key in list(__import__("os").environ):
        if key.startswith("CONFIDANTE_"):
            monkeypatch.delenv(key)
    data = tmp_path / "data"
    monkeypatch.setenv("CONFIDANTE_DATA_DIR", str(data))
    history = tmp_path / "history.jsonl"
    lines = [
        {"id": "1", "speaker": "dana", "text": "I live in Berlin.", "ts": "2024-03-01T10:00:00Z"},
        {"id": "2", "speaker": "dana", "text": "I love chess.", "ts": "2024-03-01T10:01:00Z"},
    ]
    history.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli.app, ["import", str(history), "--person", "dana", "--me", "dana"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert not (data / "broker" / "worker.log").exists()  # no worker was started for an import
    queued = [json.loads(p.read_text()) for p in (data / "broker" / "queue").glob("*.msg")]
    assert [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in queued] == [
        ("confidante.consolidate", "['dana']")
    ]


def test_every_queue_binding_goes_under_the_data_dir_not_the_cwd(settings, tmp_path):
    """kombu's filesystem transport writes one `<exchange>.exchange` table per bound queue, into
    ./control unless told otherwise: both queues a worker consumes (consolidation and adapters)
    must land in the data dir's broker folder, whatever directory the process started in. A
    fresh process: kombu remembers bindings process-wide and would skip writing them again."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    script = (
        "from workers.app import ensure_dirs, make_app\n"
        "from workers.worker import ALL_QUEUES\n"
        "app = make_app()\n"
        "ensure_dirs(app.confidante_settings)\n"
        "app.amqp.queues.select(ALL_QUEUES)  # as `worker --queues` does: each its own exchange\n"
        "with app.connection_for_write() as conn:\n"
        "    for queue in app.amqp.queues.consume_from.values():\n"
        "        queue(conn.default_channel).declare()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDANTE_")}
    env.update(CONFIDANTE_DATA_DIR=str(settings.data_dir), PYTHONPATH=str(Path(__file__).parents[2]))
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    tables = {p.name for p in (broker_dir(settings) / "control").glob("*.exchange")}
    assert tables == {f"{q}.exchange" for q in ALL_QUEUES}
    assert not list(cwd.iterdir())
