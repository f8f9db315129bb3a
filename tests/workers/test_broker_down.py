"""The broker is down: the chat keeps answering, work waits in the outbox, the log says it once,
and the outbox is replayed when the broker is back (live, or at the next start)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import queue
import socket
import threading
import time

import pytest
from structlog.testing import capture_logs

from core.assistant import Assistant
from tests.helpers import dm, say
from tests.workers.conftest import REDIS_URL, wait_for
from workers.app import QUEUE, TASK_CONSOLIDATE
from workers.jobs import CeleryJobs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Forwarder:
    """A TCP relay from `port` to the real Redis: 'the broker comes back' on the same address."""

    def __init__(self, port: int, target: int = 6379) -> None:
        self.server = socket.create_server(("127.0.0.1", port))
        self.target = target
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.stopped = True
        self.server.close()


def _queued_tasks(redis_db) -> list[tuple[str, list]]:
    """The queued tasks in the order a worker takes them (kombu LPUSHes and BRPOPs)."""
    out = []
    for raw in reversed(redis_db.lrange(QUEUE, 0, -1)):
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        out.append((message["headers"]["task"], body[0]))
    return out


def test_chat_answers_while_broker_is_down_and_outbox_is_replayed(settings, store, tiny_engine, redis_db):
    port = _free_port()
    db = REDIS_URL.rsplit("/", 1)[1]
    settings = settings.model_copy(
        update={
            "broker_url": f"redis://127.0.0.1:{port}/{db}",
            "consolidate_after_turns": 2,
            "outbox_retry_seconds": 0.5,
            "broker_connect_timeout": 0.5,
        }
    )
    with capture_logs() as logs:
        jobs = CeleryJobs(settings)
        assistant = Assistant(settings, store, tiny_engine, jobs=jobs)

        async def chat() -> list[float]:
            took = []
            for i in range(6):
                start = time.monotonic()
                reply = await say(assistant, dm(f"Note number {i}: I like tea.", person="dana"))
                took.append(time.monotonic() - start)
                assert reply  # the model answered
            return took

        took = asyncio.run(chat())
        assert jobs.flush(30)
        assert max(took) < 10  # never waits on the broker's connect timeouts (order of magnitude)
        assert jobs.broker_down
        assert jobs.outbox.load() == [(TASK_CONSOLIDATE, "dana")]  # three triggers, kept once
        assert redis_db.llen(QUEUE) == 0

        relay = Forwarder(port)
        try:
            wait_for(lambda: not jobs.broker_down and not jobs.outbox.load(), 60, "the outbox replay")
            assert _queued_tasks(redis_db) == [(TASK_CONSOLIDATE, ["dana"])]
            jobs.after_turn("dana")
            jobs.after_turn("dana")
            assert jobs.flush(30)
            assert len(_queued_tasks(redis_db)) == 2  # and new work goes straight to the broker
        finally:
            jobs.close()
            relay.close()
    down = [e for e in logs if e["event"].startswith("broker unreachable")]
    back = [e for e in logs if e["event"].startswith("broker reachable again")]
    assert len(down) == 1 and len(back) == 1, [e["event"] for e in logs]
    assert back[0]["replayed"] == 1
    assert all("tea" not in json.dumps(e, default=str) for e in logs)  # no message text logged


def test_outbox_left_by_a_stopped_process_is_replayed_at_the_next_start(settings, redis_db):
    down = settings.model_copy(
        update={"broker_url": f"redis://127.0.0.1:{_free_port()}/9", "broker_connect_timeout": 0.5}
    )
    jobs = CeleryJobs(down)
    jobs.memory_changed("ana")
    jobs.forget_person("bo")
    jobs.close()
    assert [name for name, _ in jobs.outbox.load()] == [
        "confidante.refresh_profile",
        "confidante.forget_person",
    ]

    up = settings.model_copy(update={"broker_url": REDIS_URL})
    again = CeleryJobs(up)
    try:
        assert again.flush(30)
        wait_for(lambda: redis_db.llen(QUEUE) == 2, 30, "replayed tasks")
        assert again.outbox.load() == []
        assert _queued_tasks(redis_db) == [
            ("confidante.refresh_profile", ["ana"]),
            ("confidante.forget_person", ["bo"]),
        ]
    finally:
        again.close()


def test_after_turn_never_raises_into_the_chat_path(settings):
    class Broken(queue.Queue):
        def put(self, item, block=True, timeout=None):
            raise RuntimeError("disk full")

    jobs = CeleryJobs(settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/9"}))
    working = jobs._queue
    try:
        jobs._queue = Broken()  # whatever breaks inside, the chat path only sees a logged error
        with capture_logs() as logs:
            jobs.after_turn("dana")
            jobs.memory_changed("dana")
        assert [e["event"] for e in logs] == ["could not defer background work"] * 2
    finally:
        jobs._queue = working
        jobs.close(drain=False)


@pytest.mark.parametrize("url", ["redis://user:secret@127.0.0.1:1/0"])
def test_broker_password_never_reaches_the_log(settings, url):
    with capture_logs() as logs:
        jobs = CeleryJobs(settings.model_copy(update={"broker_url": url, "broker_connect_timeout": 0.5}))
        jobs.after_turn("x")
        jobs.memory_changed("x")
        jobs.flush(30)
        jobs.close()
    assert logs and "secret" not in json.dumps(logs, default=str)
