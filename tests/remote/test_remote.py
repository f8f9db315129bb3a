"""RemoteEngine's failure handling and adapter choice against a fake OpenAI-compatible server.

The fake speaks vLLM's wire format (SSE `data:` chunks, /v1/models with `parent` for adapters,
/v1/load_lora_adapter, /tokenize) and can fail on demand; the real server is in test_vllm.py.
Publishing and token counting block, as in a worker: tests call them in a thread so the fake, on
the test's event loop, can answer.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest
from aiohttp import web

from core.config import Settings
from core.llm.adapters import WEIGHTS, AdapterStore
from core.llm.remote import RemoteEngine, ServerUnavailable
from core.llm.served_adapters import ZERO_ADAPTER, ServedAdapters

HELLO = [{"role": "user", "content": "Hello"}]


class FakeServer:
    def __init__(self) -> None:
        self.fail_next = 0  # answer this many chat requests with `fail_status`
        self.fail_status = 503
        self.cut_after_first = False  # send one delta, then drop the connection
        self.stall_seconds = 0.0
        self.load_ok = True
        self.loaded: set[str] = set()
        self.chats: list[dict] = []
        self.loads: list[str] = []
        self.reply = ["Hel", "lo ", "there."]
        self.runner: web.AppRunner | None = None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/load_lora_adapter", self.load)
        app.router.add_post("/v1/unload_lora_adapter", self.unload)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_get("/lora-adapters", self.lora_adapters)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def models(self, request: web.Request) -> web.Response:
        data = [{"id": "base", "parent": None, "max_model_len": 1024}]
        data += [{"id": n, "parent": "base"} for n in sorted(self.loaded)]
        return web.json_response({"object": "list", "data": data})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.chats.append(body)
        if self.stall_seconds:
            await asyncio.sleep(self.stall_seconds)
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.json_response({"error": "busy"}, status=self.fail_status)
        if body["model"] not in {"base", *self.loaded}:
            return web.json_response({"error": {"message": "model does not exist"}}, status=404)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i, piece in enumerate(self.reply):
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if self.cut_after_first and i == 0:
                request.transport.close()
                return response
        await response.write(b"data: [DONE]\n\n")
        return response

    async def load(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.loads.append(body["lora_name"])
        if not self.load_ok or not Path(body["lora_path"], WEIGHTS).exists():
            return web.Response(status=500, text="cannot load")
        self.loaded.add(body["lora_name"])
        return web.Response(text="Success")

    async def unload(self, request: web.Request) -> web.Response:
        self.loaded.discard((await request.json())["lora_name"])
        return web.Response(text="Success")

    async def lora_adapters(self, request: web.Request) -> web.Response:
        """llama.cpp's server: the adapters it was started with (`--lora`), by id."""
        return web.json_response(
            [
                {"id": i, "path": f"/adapters/{n}.gguf", "scale": 0.0}
                for i, n in enumerate(sorted(self.loaded))
            ]
        )

    async def tokenize(self, request: web.Request) -> web.Response:
        words = (await request.json())["prompt"].split()
        return web.json_response({"count": len(words), "tokens": list(range(len(words)))})


@pytest.fixture
async def fake():
    server = FakeServer()
    await server.start()
    yield server
    await server.stop()


def _settings(tmp_path: Path, url: str, **kw) -> Settings:
    values = {
        "data_dir": tmp_path / "data",
        "generation_url": url,
        "generation_model": "base",
        "generation_retries": 3,
        "generation_connect_timeout": 0.5,
        "generation_read_timeout": 2.0,
        "generation_breaker_failures": 2,
        "generation_breaker_seconds": 0.3,
        **kw,
    }
    return Settings(**values, _env_file=None)


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens once the socket is closed


async def test_streams_deltas_with_the_request_fields(fake, tmp_path):
    engine = RemoteEngine(_settings(tmp_path, fake.url))
    deltas = [d async for d in engine.stream(HELLO, temperature=0.0, max_new_tokens=12, seed=3)]
    assert deltas == ["Hel", "lo ", "there."]
    body = fake.chats[-1]
    assert body["model"] == "base" and body["stream"] is True
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (12, 0.0, 3)
    assert engine.context_tokens == 1024  # the server's max_model_len is below the setting
    await engine.aclose()


async def test_transient_errors_are_retried_with_backoff(fake, tmp_path):
    fake.fail_next = 2
    engine = RemoteEngine(_settings(tmp_path, fake.url))
    started = time.monotonic()
    assert await engine.generate(HELLO) == "Hello there."
    assert len(fake.chats) == 3
    assert time.monotonic() - started >= 0.25  # it waited between attempts
    await engine.aclose()


async def test_a_client_error_is_not_retried(fake, tmp_path):
    fake.fail_next, fake.fail_status = 5, 400
    engine = RemoteEngine(_settings(tmp_path, fake.url))
    with pytest.raises(ServerUnavailable):
        await engine.generate(HELLO)
    assert len(fake.chats) == 1
    await engine.aclose()


async def test_after_text_was_sent_a_failure_ends_the_reply_without_a_retry(fake, tmp_path):
    fake.cut_after_first = True
    engine = RemoteEngine(_settings(tmp_path, fake.url))
    got = []
    with pytest.raises(ServerUnavailable):
        async for delta in engine.stream(HELLO):
            got.append(delta)
    assert got == ["Hel"] and len(fake.chats) == 1  # a retry would repeat "Hel"
    await engine.aclose()


async def test_a_stalled_server_times_out(fake, tmp_path):
    fake.stall_seconds = 5.0
    engine = RemoteEngine(_settings(tmp_path, fake.url, generation_read_timeout=0.2, generation_retries=2))
    started = time.monotonic()
    with pytest.raises(ServerUnavailable):
        await engine.generate(HELLO)
    assert time.monotonic() - started < 3.0
    await engine.aclose()


async def test_down_server_fails_fast_opens_the_circuit_and_recovers(fake, tmp_path):
    fake.fail_next = 1000
    engine = RemoteEngine(_settings(tmp_path, fake.url, generation_retries=1))
    for _ in range(2):
        with pytest.raises(ServerUnavailable):
            await engine.generate(HELLO)
    assert engine.breaker.is_open
    before = len(fake.chats)
    with pytest.raises(ServerUnavailable):  # open: answered at once, the server is not asked
        await engine.generate(HELLO)
    assert len(fake.chats) == before
    fake.fail_next = 0
    await asyncio.sleep(0.35)
    assert await engine.generate(HELLO) == "Hello there."  # half-open probe succeeds
    assert not engine.breaker.is_open
    await engine.aclose()


async def test_nothing_listening_is_a_clear_sentence_within_seconds(tmp_path):
    engine = RemoteEngine(_settings(tmp_path, _closed_port_url()))
    started = time.monotonic()
    with pytest.raises(ServerUnavailable) as caught:
        await engine.generate(HELLO)
    assert time.monotonic() - started < 5.0
    assert caught.value.user_message.count(".") == 1  # one sentence
    await engine.aclose()


async def test_the_person_reads_one_sentence_when_the_server_is_down(tmp_path):
    from core.assistant import build_assistant
    from tests.helpers import dm, say

    settings = _settings(tmp_path, _closed_port_url(), generation_retries=1)
    assistant = build_assistant(settings)
    try:
        reply = await say(assistant, dm("Hello, are you there?", person="eve"))
    finally:
        assistant.close()
    assert reply == ServerUnavailable.user_message


def test_a_remote_backend_loads_no_local_model(tmp_path, monkeypatch):
    import core.llm.model
    from core.assistant import build_assistant

    def refuse(*args, **kwargs):
        raise AssertionError("a local model was loaded")

    monkeypatch.setattr(core.llm.model, "load_model", refuse)
    assistant = build_assistant(_settings(tmp_path, "http://127.0.0.1:9/v1"))  # nothing needs to answer
    try:
        assert type(assistant.engine).__name__ == "RemoteEngine"
    finally:
        assistant.close()


async def test_token_counts_come_from_the_server_and_overestimate_when_it_is_down(fake, tmp_path):
    engine = RemoteEngine(_settings(tmp_path, fake.url))
    # a blocking call: from another thread, so the fake (on this loop) can answer
    assert await asyncio.to_thread(engine.count_tokens, "one two three four") == 4
    down = RemoteEngine(_settings(tmp_path, _closed_port_url()))
    text = "one two three four"
    assert down.count_tokens(text) >= len(text) // 4  # an estimate that errs on the long side
    engine.close()
    down.close()


def _publish(settings: Settings, person: str, seed: int) -> str:
    """A promoted adapter version on disk (content differs per seed)."""
    import torch
    from safetensors.torch import save_file

    store = AdapterStore(settings)
    name, tmp = store.new_version_dir(person)
    torch.manual_seed(seed)
    save_file(
        {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.randn(4, 8)},
        str(tmp / WEIGHTS),
    )
    (tmp / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    store.commit_version(person, name, tmp, {"status": "current"})
    store.set_current(person, name)
    return name


async def test_each_person_gets_only_their_own_adapter_name(fake, tmp_path):
    settings = _settings(tmp_path, fake.url)
    for person, seed in (("ann", 1), ("ben", 2)):
        _publish(settings, person, seed)
        await asyncio.to_thread(ServedAdapters(settings).publish, person)
    served = ServedAdapters(settings)
    ann, ben = served.current_name("ann"), served.current_name("ben")
    assert ann != ben and {ann, ben, ZERO_ADAPTER} <= fake.loaded
    engine = RemoteEngine(settings)
    for person in ("ann", "ben", "cleo", None):
        await engine.generate(HELLO, adapter=person)
    # no row is adapter-less next to adapters: people without one name the all-zero adapter
    assert [c["model"] for c in fake.chats] == [ann, ben, ZERO_ADAPTER, ZERO_ADAPTER]
    await engine.aclose()


async def test_an_adapter_that_cannot_be_loaded_falls_back_to_the_base_model(fake, tmp_path):
    settings = _settings(tmp_path, fake.url)
    _publish(settings, "ann", 1)
    fake.load_ok = False
    await asyncio.to_thread(ServedAdapters(settings).publish, "ann")  # the worker's load failed
    engine = RemoteEngine(settings)
    await engine.generate(HELLO, adapter="ann")
    assert fake.chats[-1]["model"] == "base"
    await engine.aclose()


async def test_a_server_that_lost_an_adapter_answers_with_the_base_model_not_an_error(fake, tmp_path):
    settings = _settings(tmp_path, fake.url)
    _publish(settings, "ann", 1)
    await asyncio.to_thread(ServedAdapters(settings).publish, "ann")
    engine = RemoteEngine(settings)
    await engine._ensure_model()
    name = ServedAdapters(settings).current_name("ann")
    fake.loaded.discard(name)  # a restart; our cached listing still has it
    assert await engine.generate(HELLO, adapter="ann") == "Hello there."
    assert [c["model"] for c in fake.chats[-2:]] == [name, "base"]
    await engine.aclose()


async def test_forgetting_withdraws_every_version_and_a_retrain_gets_a_new_name(fake, tmp_path):
    from workers.training import forget_person

    settings = _settings(tmp_path, fake.url)
    _publish(settings, "ann", 1)
    first = await asyncio.to_thread(ServedAdapters(settings).publish, "ann")
    await asyncio.to_thread(forget_person, "ann", settings)
    assert first not in fake.loaded and not (settings.served_adapter_dir / first).exists()
    _publish(settings, "ann", 2)  # v0001 again, other weights
    second = await asyncio.to_thread(ServedAdapters(settings).publish, "ann")
    assert second != first and second.split("-")[1] == first.split("-")[1] == "v0001"


async def test_llama_cpp_picks_the_persons_adapter_by_id_and_zeroes_the_others(fake, tmp_path):
    settings = _settings(tmp_path, fake.url, generation_adapters="llamacpp")
    _publish(settings, "ann", 1)
    _publish(settings, "ben", 2)
    served = ServedAdapters(settings)
    ann, ben = served.current_name("ann"), served.current_name("ben")
    fake.loaded = {ann, ben}  # the server was started with both GGUF files
    ids = {n: i for i, n in enumerate(sorted(fake.loaded))}
    engine = RemoteEngine(settings)
    await engine.generate(HELLO, adapter="ben")
    body = fake.chats[-1]
    assert body["model"] == "base"
    assert body["lora"] == [{"id": ids[ben], "scale": 1.0}, {"id": ids[ann], "scale": 0.0}]
    # no adapter: every adapter at scale 0 (without the field llama.cpp applies them all)
    await engine.generate(HELLO, adapter="cleo")
    assert fake.chats[-1]["lora"] == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 0.0}]
    await engine.aclose()


async def test_an_adapter_trained_before_the_server_is_published_on_first_use(fake, tmp_path):
    settings = _settings(tmp_path, fake.url)
    _publish(settings, "ann", 1)  # promoted on disk, never published (no server back then)
    _publish(settings, "ben", 2)
    await asyncio.to_thread(ServedAdapters(settings).publish, "ben")
    name = ServedAdapters(settings).current_name("ann")
    assert not (settings.served_adapter_dir / name).exists()
    engine = RemoteEngine(settings)
    await engine.generate(HELLO, adapter="ann")
    assert fake.chats[-1]["model"] == name and (settings.served_adapter_dir / name).exists()
    await engine.aclose()
