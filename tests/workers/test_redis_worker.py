"""A real `confidante worker` process consuming from a real Redis (DB 9)."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections import Counter
from types import SimpleNamespace

import core.assistant
from core.assistant import Assistant
from core.memory.records import Person, Turn
from tests.helpers import dm, say
from tests.workers.conftest import REDIS_URL, wait_for
from workers.app import TASK_CONSOLIDATE, make_app
from workers.jobs import CeleryJobs


def test_messages_in_consolidation_in_the_worker_memories_out(
    settings, store, redis_db, spawn_worker, tiny_engine, tmp_path, monkeypatch
):
    settings = settings.model_copy(update={"broker_url": REDIS_URL})
    # known request ids, to find the message's id in the worker's log lines for its task
    request_ids = [uuid.UUID(int=0xC0FFEE0000 + n) for n in range(100)]
    monkeypatch.setattr(core.assistant, "uuid", SimpleNamespace(uuid4=iter(request_ids).__next__))
    log = tmp_path / "worker.log"
    spawn_worker(settings, log, "--no-beat")
    jobs = CeleryJobs(settings)
    assistant = Assistant(settings, store, tiny_engine, jobs=jobs)
    jobs.attach(store)

    async def chat(*texts: str) -> None:
        for text in texts:
            assert await say(assistant, dm(text, person="dana"))

    try:
        asyncio.run(
            chat("I live in Berlin.", "I work at Acme.", "Actually, I moved to Lisbon.", "Call me Dana.")
        )
        assert jobs.flush() and not jobs.broker_down

        def texts() -> set[str]:
            return {m.text for m in store.memories_of("dana")}

        wait_for(
            lambda: {"Lives in Lisbon", "Works at Acme", "Is called Dana"} <= texts(), 240, "memories", log
        )
        history = [m.text for m in store.memories_of("dana", current_only=False) if not m.current]
        assert history == ["Lives in Berlin"]
        # the 4th message asked for the consolidation: its request id is on the task's log line
        consolidated = [line for line in log.read_text().splitlines() if "consolidated" in line]
        assert consolidated and request_ids[3].hex[:16] in consolidated[0], consolidated
        # the worker's profile reaches the chat process's cached person after the next turn
        asyncio.run(chat("Thanks!"))
        jobs.flush()
        assert "Lives in Lisbon" in store.person("dana").profile
    finally:
        jobs.close()


def test_worker_killed_mid_task_finishes_after_restart_exactly_once(
    settings, store, redis_db, spawn_worker, tmp_path
):
    settings = settings.model_copy(update={"broker_url": REDIS_URL})
    store.save_person(Person("zoe", "Zoe"))
    texts = [
        "My name is Zoe.",
        "I live in Berlin.",
        "I work at Initech as a tester.",
        "I moved to Lisbon.",
        "I'm vegetarian.",
        "I'm working on a garden planner called Sprout.",
        "It needs to run offline.",
        "How do I learn Rust?",
        "What's the best way to learn Rust?",
        "Any tips for learning Rust quickly?",
    ]
    store.add_turns([Turn("zoe", "console", "zoe", f"z{i}", "user", t) for i, t in enumerate(texts)])
    fast_redelivery = {
        "CONFIDANTE_BROKER_VISIBILITY_TIMEOUT": "4",
        "CONFIDANTE_BROKER_RESTORE_INTERVAL": "1",
        "CONFIDANTE_CONSOLIDATE_LOCK_SECONDS": "5",
    }
    log = tmp_path / "worker.log"
    first = spawn_worker(
        settings, log, "--no-beat", CONFIDANTE_CONSOLIDATE_WRITE_DELAY_SECONDS="600", **fast_redelivery
    )
    make_app(settings).send_task(TASK_CONSOLIDATE, args=["zoe"])

    wait_for(lambda: store.memories_of("zoe", current_only=False), 240, "the first write", log)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    partial = store.memories_of("zoe", current_only=False)
    assert 1 <= len(partial) < 6
    assert store.refresh_person("zoe").settings.memory_state == {}  # the task did not finish

    # no beat: only the broker's redelivery of the unacked task can finish the work
    spawn_worker(settings, log, "--no-beat", **fast_redelivery)
    wait_for(lambda: store.refresh_person("zoe").settings.memory_state, 240, "the redelivered task", log)

    memories = store.memories_of("zoe", current_only=False)
    counts = Counter(m.text for m in memories)
    assert max(counts.values()) == 1, counts  # no duplicates
    assert {m.text for m in memories if m.current} == {
        "Is called Zoe",
        "Lives in Lisbon",
        "Works at Initech",
        "Works as a tester",
        "Is vegetarian",
        "Working on Sprout, a garden planner (needs to run offline)",
        next(m.text for m in memories if m.kind == "question"),
    }
    assert [m.text for m in memories if not m.current] == ["Lives in Berlin"]
    [question] = [m for m in memories if m.kind == "question"]
    assert len(question.source_turn_ids) == 3
    assert "Lives in Lisbon" in store.person("zoe").profile
    log_text = log.read_text()
    assert "I live in Berlin" not in log_text  # no message text in worker logs at INFO
