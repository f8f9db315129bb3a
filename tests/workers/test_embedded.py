"""No Redis: `confidante run` (and `chat`) start the embedded broker and worker themselves."""

from __future__ import annotations

import getpass

import pytest
from typer.testing import CliRunner

import bots.cli as cli
from core.assistant import Assistant
from core.config import get_settings
from core.memory.store import Store
from workers.app import broker_dir
from workers.jobs import CeleryJobs
from workers.locks import person_lock


@pytest.mark.parametrize("command", ["run"])  # `chat` shares the wiring (bots/cli.py)
def test_cli_runs_the_same_tasks_through_the_embedded_broker(
    command, tmp_path, monkeypatch, embedder, tiny_engine
):
    data = tmp_path / "data"
    for key in list(__import__("os").environ):
        if key.startswith(("CONFIDANTE_", "TELEGRAM_", "SLACK_", "MATRIX_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CONFIDANTE_DATA_DIR", str(data))
    monkeypatch.setenv("CONFIDANTE_WORKER_DRAIN_SECONDS", "300")
    get_settings.cache_clear()
    built: dict = {}

    def assistant_with_tiny_model(settings, *, jobs=None):
        assert isinstance(jobs, CeleryJobs) and jobs.embedded is not None  # the real wiring
        settings.ensure_data_dir()
        built["store"] = Store(settings.data_dir / "lancedb", embedder)
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
