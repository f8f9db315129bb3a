"""Generation through a real vLLM server (CPU build) with each person's adapter loaded at runtime.

The bundled model is served in float32 and our own engine runs the same weights in float32, so
greedy decoding must give the same text: any difference means a person got the wrong adapter (or
none). Two people with different adapters and one without any are sent in one batch.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import httpx
import pytest

from core.config import Settings
from core.llm.adapters import AdapterStore, plain_copy
from core.llm.engine import Engine
from core.llm.model import load_model
from core.llm.remote import RemoteEngine, ServerUnavailable
from core.llm.sampling import Sampling
from core.llm.served_adapters import ServedAdapters
from infra.vllm.server import SERVED_NAME, bundled_model_dir

pytestmark = pytest.mark.vllm

ASK = [{"role": "user", "content": "What should I cook tonight? Answer in one sentence."}]
TOKENS = 24

# plain greedy, as the server decodes at temperature 0: our profile's penalties and stops would differ
GREEDY = Sampling(temperature=0.0)


def _make_adapter(model, path: Path, seed: int) -> None:
    """A random non-zero rank-8 PEFT adapter, saved as training saves one."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(plain_copy(model), config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.mul_(0.7)  # changes the answer, still sentences
    peft_model.save_pretrained(path)


def _promote(settings: Settings, model, person: str, seed: int) -> str:
    """The person's adapter as workers/training.py leaves a promoted one: a committed version
    named current."""
    store = AdapterStore(settings)
    name, tmp = store.new_version_dir(person)
    _make_adapter(model, tmp, seed)
    store.commit_version(person, name, tmp, {"status": "current", "sources": []})
    store.set_current(person, name)
    return name


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return bundled_model_dir()


@pytest.fixture(scope="module")
def local(model_dir):
    """Our engine's model: the same files, float32 like the server."""
    return load_model(Settings(model=str(model_dir), dtype="float32", device="cpu", _env_file=None))


@pytest.fixture(scope="module")
def settings(tmp_path_factory, vllm_url, model_dir, local) -> Settings:
    data = tmp_path_factory.mktemp("remote-data")
    s = Settings(
        data_dir=data,
        generation_url=vllm_url + "/v1",
        generation_model=SERVED_NAME,
        generation_tokenizer=str(model_dir),
        temperature=0.0,
        max_new_tokens=TOKENS,
        generation_breaker_seconds=0.5,
        _env_file=None,
    )
    for person, seed in (("ann", 11), ("ben", 22)):
        _promote(s, local.model, person, seed)
        assert ServedAdapters(s).publish(person) is not None
    return s


@pytest.fixture(scope="module")
def ours(local, settings) -> Engine:
    """One engine for the module: its adapter registry wraps the model's projections in place."""
    engine = Engine(local, settings)
    yield engine
    engine.close()


async def _ours(engine: Engine, person: str | None) -> str:
    return await engine.generate(ASK, adapter=person, sampling=GREEDY, max_new_tokens=TOKENS)


def _listed(settings: Settings) -> set[str]:
    data = httpx.get(settings.generation_url + "/models", timeout=10).json()["data"]
    return {m["id"] for m in data if m.get("parent")}


async def test_each_person_gets_their_own_adapter_in_one_batch(settings, ours):
    served = ServedAdapters(settings)
    ann, ben = served.current_name("ann"), served.current_name("ben")
    assert {ann, ben} <= _listed(settings)

    remote = RemoteEngine(settings)
    try:
        got = await asyncio.gather(
            *(remote.generate(ASK, adapter=p, temperature=0.0) for p in ("ann", "ben", "cleo"))
        )
    finally:
        await remote.aclose()
    want = [await _ours(ours, p) for p in ("ann", "ben", None)]
    print("\n" + json.dumps(dict(zip(["ann", "ben", "cleo (base)"], got, strict=True)), indent=1))
    assert len(set(want)) == 3, "the adapters must change the answer, or this test proves nothing"
    assert got == want


async def test_prompt_budget_counts_with_the_served_tokenizer(settings):
    remote = RemoteEngine(settings)
    text = "Ann's marathon is on 14 April; she trains 5 km every morning. Ünïcødé ✓"
    local_count = remote.count_tokens(text)
    by_server = RemoteEngine(settings.model_copy(update={"generation_tokenizer": None}))
    assert by_server.count_tokens(text) == local_count > 0
    by_server.close()


async def test_rollback_and_forgetting_unload_and_the_base_model_answers(settings, local, ours):
    person = "dora"
    _promote(settings, local.model, person, 33)
    served = ServedAdapters(settings)
    first = served.publish(person)
    second_version = _promote(settings, local.model, person, 44)
    second = served.publish(person)
    assert f"-{second_version}-" in second and second != first
    listed = _listed(settings)
    assert second in listed and first not in listed, "a newer version unloads the older one"

    from workers.training import forget_person, rollback

    rollback(person, settings)  # back to the first version: the second leaves the server
    listed = _listed(settings)
    assert first in listed and second not in listed

    forget_person(person, settings)
    assert not any(n.startswith(first.rsplit("-", 1)[0]) for n in _listed(settings))
    remote = RemoteEngine(settings)
    try:
        got = await remote.generate(ASK, adapter=person, temperature=0.0)
    finally:
        await remote.aclose()
    assert got == await _ours(ours, None)


async def test_a_server_that_lost_its_adapters_gets_them_again(settings, ours):
    """After a server restart the published adapter is loaded again by the chat process."""
    served = ServedAdapters(settings)
    name = served.current_name("ben")
    served.unload(name)
    assert name not in _listed(settings)
    remote = RemoteEngine(settings)
    try:
        got = await remote.generate(ASK, adapter="ben", temperature=0.0)
    finally:
        await remote.aclose()
    assert name in _listed(settings)
    assert got == await _ours(ours, "ben")


class _Proxy:
    """A TCP forwarder in front of the real server, to take it away and bring it back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server: asyncio.Server | None = None
        self.conns: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        self.server.close()
        for w in self.conns:
            w.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.conns += [writer, up_writer]

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_server_down_gives_one_sentence_then_recovers_by_itself(settings, ours):
    port = int(settings.generation_url.rsplit(":", 1)[1].split("/")[0])
    proxy = _Proxy(port)
    await proxy.start()
    s = settings.model_copy(update={"generation_url": f"http://127.0.0.1:{proxy.port}/v1"})
    remote = RemoteEngine(s)
    try:
        assert await remote.generate(ASK, adapter="ann", temperature=0.0) == await _ours(ours, "ann")
        await proxy.stop()
        for _ in range(s.generation_breaker_failures):
            with pytest.raises(ServerUnavailable) as caught:
                await remote.generate(ASK, adapter="ann", temperature=0.0)
            assert caught.value.user_message.endswith(".")
        assert remote.breaker.is_open
        await proxy.start()
        await asyncio.sleep(s.generation_breaker_seconds + 0.1)
        assert await remote.generate(ASK, adapter="ann", temperature=0.0) == await _ours(ours, "ann")
        assert not remote.breaker.is_open
    finally:
        await remote.aclose()
        await proxy.stop()
