"""Fixtures for the workers: real LanceDB in a temp dir, the real embedder, real Redis (DB 9 or
CONFIDANTE_TEST_REDIS_DB, so two checkouts can test side by side; flushed before and after), real worker processes, and the core's Engine on the tiny random Llama."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from core.config import Settings
from core.memory.store import Store

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = f"redis://127.0.0.1:6379/{os.environ.get('CONFIDANTE_TEST_REDIS_DB', '9')}"


@pytest.fixture(scope="session")
def tiny_engine(tiny_model, tmp_path_factory):
    """The core's Engine on the tiny random Llama (tests/conftest.py), a few tokens a reply."""
    from core.llm.engine import Engine

    data = tmp_path_factory.mktemp("engine")
    return Engine(tiny_model, Settings(data_dir=data, max_new_tokens=6, temperature=0.0, _env_file=None))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        max_new_tokens=6,
        consolidate_after_turns=4,
        _env_file=None,
    )


@pytest.fixture
def store(settings: Settings, embedder) -> Store:
    settings.ensure_data_dir()
    return Store(settings.data_dir / "lancedb", embedder)


@pytest.fixture
def redis_db() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail("Redis must run on 127.0.0.1:6379 for the worker tests (make test starts it)")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDANTE_")}
    env.update(
        CONFIDANTE_DATA_DIR=str(settings.data_dir),
        CONFIDANTE_LOG_LEVEL="INFO",
        PYTHONPATH=str(ROOT),
        **extra,
    )
    if settings.broker_url:
        env["CONFIDANTE_BROKER_URL"] = settings.broker_url
    return env


@pytest.fixture
def spawn_worker() -> Iterator[Callable[..., subprocess.Popen]]:
    """Start `confidante worker` processes (the real CLI entry); all are stopped at the end."""
    procs: list[subprocess.Popen] = []

    def spawn(settings: Settings, log: Path, *args: str, **env: str) -> subprocess.Popen:
        out = open(log, "ab")  # noqa: SIM115 - the child writes it
        proc = subprocess.Popen(
            [sys.executable, "-c", "from app.cli import app; app()", "worker", *args],
            env=worker_env(settings, **env),
            cwd=str(ROOT),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for(check: Callable[[], Any], timeout: float, what: str, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")
