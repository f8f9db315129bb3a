"""/healthz, /readyz and /metrics served by `confidante run`'s ops server, after real messages."""

from __future__ import annotations

import asyncio
import shutil

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.ops_http import serve_ops
from core.assistant import Assistant
from tests.helpers import dm, say
from tests.ops.conftest import free_port


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    """name + sorted labels -> value, from the exposition text, by prometheus-client's parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_real_messages_and_name_no_person(assistant: Assistant, settings) -> None:
    async with serve_ops(assistant, settings) as port, httpx.AsyncClient() as http:
        base = f"http://127.0.0.1:{port}"
        assert (await http.get(f"{base}/healthz")).json() == {"status": "ok"}
        before = _samples((await http.get(f"{base}/metrics")).text)

        people = ["ops-ann-7731", "ops-bob-9120", "ops-cy-4410"]
        for person in people:
            assert await say(assistant, dm("I keep bees on my roof.", person=person, platform="slack"))
            assert await say(assistant, dm("/help", person=person, platform="slack"))
        dup = dm("what do I keep?", person=people[0], platform="slack", message_id="dup-1")
        assert await say(assistant, dup)
        assert await say(assistant, dup) is None  # a redelivery

        response = await http.get(f"{base}/metrics")
        assert response.headers["content-type"].startswith("text/plain")
        after = _samples(response.text)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("confidante_messages_total", platform="slack", outcome="replied") == 4
    assert delta("confidante_messages_total", platform="slack", outcome="answered") == 3
    assert delta("confidante_messages_total", platform="slack", outcome="ignored") == 1
    for stage, n in (("recall", 4), ("prompt", 4), ("first_token", 4), ("reply", 4)):
        assert delta("confidante_stage_seconds_count", stage=stage) == n, stage
        assert delta("confidante_stage_seconds_sum", stage=stage) > 0, stage
    # the tiny model writes up to 6 tokens a reply (it may stop early at end-of-turn)
    assert 4 <= delta("confidante_tokens_generated_total") <= 4 * 6
    assert ("confidante_journal_backlog", ()) in after
    assert _value(after, "confidante_queue_depth") >= 0
    labels = {v for (_, pairs) in after for _, v in pairs}
    assert not labels & set(people), "a person id became a label"


async def test_readyz_follows_the_store_and_the_broker(assistant: Assistant, settings) -> None:
    redis_db = __import__("os").environ.get("CONFIDANTE_TEST_REDIS_DB", "9")
    cases = {
        "up": settings.model_copy(update={"broker_url": f"redis://127.0.0.1:6379/{redis_db}"}),
        "down": settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"}),
    }
    async with httpx.AsyncClient() as http:
        async with serve_ops(assistant, cases["up"]) as port:
            ready = await http.get(f"http://127.0.0.1:{port}/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {"model": "ok", "store": "ok", "broker": "ok"}

            # the store's folder gone (a disk unmounted, a volume lost): unready, and it says so
            lancedb = settings.data_dir / "lancedb"
            lancedb.rename(settings.data_dir / "lancedb.away")
            lancedb.write_text("not a directory")
            try:
                unready = await http.get(f"http://127.0.0.1:{port}/readyz")
            finally:
                lancedb.unlink()
                (settings.data_dir / "lancedb.away").rename(lancedb)
            assert unready.status_code == 503
            checks = unready.json()["checks"]
            assert "store" in checks["store"] and checks["broker"] == "ok"
            assert (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200

        async with serve_ops(assistant, cases["down"]) as port:
            unready = await http.get(f"http://127.0.0.1:{port}/readyz")
            assert unready.status_code == 503
            checks = unready.json()["checks"]
            assert checks["store"] == "ok" and "does not answer" in checks["broker"]
            # /healthz stays up: the process itself is fine, restarting it would not help
            assert (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
    shutil.rmtree(settings.data_dir / "lancedb.away", ignore_errors=True)


async def test_port_zero_or_taken_leaves_the_bot_running_without_endpoints(
    assistant: Assistant, settings
) -> None:
    async with serve_ops(assistant, settings.model_copy(update={"ops_port": 0})) as port:
        assert port is None
    async with serve_ops(assistant, settings) as port, serve_ops(assistant, settings) as second:
        assert port == settings.ops_port and second is None


async def test_readyz_unready_while_turns_cannot_be_written_and_ready_once_they_are(
    assistant: Assistant, settings, monkeypatch
) -> None:
    from core.memory import writer

    monkeypatch.setattr(writer, "RETRY_SECONDS", 0.2)
    turns = settings.data_dir / "lancedb" / "turns.lance"
    async with serve_ops(assistant, settings) as port, httpx.AsyncClient() as http:
        url = f"http://127.0.0.1:{port}/readyz"
        assert (await http.get(url)).status_code == 200
        turns.rename(turns.with_name("turns.away"))
        turns.write_text("the table's folder is gone")  # its folder can take no file
        try:
            reply = await assistant.handle(dm("Remember that my locker is 42.", person="ops-dee"))
            assert reply is not None and await reply.collect()  # the person is answered anyway
            for _ in range(100):
                unready = await http.get(url)
                if unready.status_code == 503:
                    break
                await asyncio.sleep(0.1)
            assert unready.status_code == 503
            assert "writing turns to the store fails" in unready.json()["checks"]["store"]
        finally:
            turns.unlink()
            turns.with_name("turns.away").rename(turns)
        for _ in range(100):
            if (await http.get(url)).status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert (await http.get(url)).status_code == 200
        await asyncio.to_thread(assistant.store.settle)
        assert [t.role for t in assistant.store.turns_of("ops-dee")] == ["user", "assistant"]
