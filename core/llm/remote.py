"""Generation on a serving engine (vLLM, llama.cpp's server, Ollama, any OpenAI-compatible
`/v1/chat/completions`), behind the same interface as the in-process engine (core/llm/engine.py).

Set CONFIDANTE_GENERATION_URL and the chat process loads no model at all: prompts are built here
(token counts from the served model's tokenizer, so they fit), the server generates, and its
streamed deltas reach the person as our own engine's do. Each person's adapter is chosen per
request (core/llm/served_adapters.py); without one on the server, the base model answers.

Failures: connect and read timeouts; retries with exponential backoff while no text was sent yet
(after that, a retry would repeat the reply's start); a circuit breaker that, after a few failed
requests in a row, answers at once for a while instead of making every person wait for timeouts,
then lets one request through to see whether the server is back. The person always gets one
sentence (ServerUnavailable.user_message), never a hang or a traceback.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from core.config import Settings
from core.llm.served_adapters import ZERO_ADAPTER, ServedAdapters, auth_headers, server_root

log = structlog.get_logger(__name__)

# a name that failed to load is not tried again for this long (the base model answers meanwhile)
LOAD_RETRY_SECONDS = 60.0
ZERO_RETRY_SECONDS = 5.0
# how long the list of adapters on the server is trusted before it is read again
LOADED_TTL_SECONDS = 30.0
COUNT_CACHE = 8192


class ServerUnavailable(RuntimeError):
    """The serving engine did not answer; `user_message` is what the person reads."""

    user_message = (
        "I can't reach my language model right now, so I can't answer this; your message is saved, "
        "please send it again in a minute."
    )


class _Transient(Exception):
    """A failure worth retrying: no connection, a timeout, a 5xx or 429 before any text."""


class CircuitBreaker:
    """Closed: requests go through. After `failures` failed requests in a row it opens for
    `seconds`: requests fail at once. Then one request is let through (half-open): success closes
    it, failure opens it again."""

    def __init__(self, failures: int, seconds: float) -> None:
        self.threshold = max(1, failures)
        self.seconds = seconds
        self.failures = 0
        self.open_until = 0.0
        self._probing = False

    def allow(self) -> bool:
        if self.failures < self.threshold:
            return True
        if time.monotonic() < self.open_until or self._probing:
            return False
        self._probing = True  # half-open: this request is the probe
        return True

    def succeeded(self) -> None:
        if self.failures >= self.threshold:
            log.info("generation.server_back")
        self.failures, self._probing = 0, False

    def failed(self) -> None:
        self.failures += 1
        self._probing = False
        if self.failures >= self.threshold:
            self.open_until = time.monotonic() + self.seconds
            log.warning("generation.circuit_open", seconds=self.seconds, failures=self.failures)

    @property
    def is_open(self) -> bool:
        return self.failures >= self.threshold and time.monotonic() < self.open_until


class RemoteEngine:
    """The ChatEngine of core/assistant.py, generating on an OpenAI-compatible server."""

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not settings.generation_url:
            raise ValueError("RemoteEngine needs CONFIDANTE_GENERATION_URL.")
        self.settings = settings
        self.root = server_root(settings.generation_url)
        self.adapters = ServedAdapters(settings)
        self.breaker = CircuitBreaker(
            settings.generation_breaker_failures, settings.generation_breaker_seconds
        )
        self.tokenizer = _local_tokenizer(settings.generation_tokenizer)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._sync_client: httpx.Client | None = None
        self._model: str | None = settings.generation_model
        self._server_context: int | None = None
        self._loaded: set[str] = set()
        self._loaded_at = 0.0
        self._lora_ids: dict[str, int] = {}
        self._load_failed: dict[str, float] = {}
        self._load_locks: dict[str, asyncio.Lock] = {}
        self._counts: dict[str, int] = {}  # texts repeat across prompts (persona, memories)

    # --- what the prompt builder needs ----------------------------------------------------

    @property
    def context_tokens(self) -> int:
        if self._server_context:
            return min(self.settings.context_tokens, self._server_context)
        return self.settings.context_tokens

    def render(self, messages: list[dict]) -> str:
        if self.tokenizer is None:
            raise RuntimeError("render() needs CONFIDANTE_GENERATION_TOKENIZER (the served model's files).")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode_messages(self, messages: list[dict]) -> list[int]:
        return list(self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"])

    def count_tokens(self, text: str) -> int:
        """The served model's count: local tokenizer files, else the server's /tokenize (cached),
        else a deliberate over-estimate (3 bytes a token) so a prompt still fits."""
        if self.tokenizer is not None:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        count = self._counts.get(text)
        if count is None:
            count = self._server_count(text)
            if count is not None:
                if len(self._counts) >= COUNT_CACHE:
                    self._counts.clear()
                self._counts[text] = count
        # the server did not answer: over-estimate (3 bytes a token), so the prompt still fits
        return count if count is not None else len(text.encode("utf-8")) // 3 + 1

    def _server_count(self, text: str) -> int | None:
        mode = self.settings.generation_adapters
        body: dict[str, Any] = (
            {"content": text}
            if mode == "llamacpp"
            else {"model": self._model or "", "prompt": text, "add_special_tokens": False}
        )
        try:
            if self._sync_client is None:
                self._sync_client = httpx.Client(timeout=httpx.Timeout(5.0, connect=1.0))
            response = self._sync_client.post(
                self.root + "/tokenize", json=body, headers=auth_headers(self.settings)
            )
            response.raise_for_status()
            data = response.json()
            return int(data["count"]) if "count" in data else len(data["tokens"])
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    # --- generation -------------------------------------------------------------------------

    async def stream(
        self,
        messages: list[dict],
        *,
        adapter: str | None = None,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> AsyncIterator[str]:
        """Yield the reply's text as the server streams it (see Engine.stream for the arguments;
        `adapter` is the person id whose adapter should answer)."""
        max_new = self.settings.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        if self.tokenizer is not None:
            max_new = min(max_new, self.context_tokens - len(self.encode_messages(messages)))
        if max_new <= 0:
            return
        if not self.breaker.allow():
            raise ServerUnavailable("the generation server is marked down (circuit open)")
        body: dict[str, Any] = {
            "messages": messages,
            "stream": True,
            "max_tokens": max_new,
            "temperature": self.settings.temperature if temperature is None else float(temperature),
            "top_p": self.settings.top_p if top_p is None else float(top_p),
        }
        if seed is not None:
            body["seed"] = seed
        sent = False
        try:
            async for attempt in self._retrying():
                with attempt:
                    await self._ensure_model()
                    body.update(await self._adapter_fields(adapter))
            async for delta in self._stream_with_retries(body):
                if not sent:
                    sent = True
                    self.breaker.succeeded()
                yield delta
            if not sent:
                self.breaker.succeeded()
        except (_Transient, httpx.HTTPError) as exc:
            self.breaker.failed()
            log.warning("generation.server_failed", error=_describe(exc), after_text=sent)
            raise ServerUnavailable(f"the generation server failed: {_describe(exc)}") from exc

    async def generate(self, messages: list[dict], **kwargs: Any) -> str:
        return "".join([delta async for delta in self.stream(messages, **kwargs)])

    def health(self) -> str | None:
        """For /readyz: None while the server answers, else what is wrong (blocking, bounded)."""
        return server_problem(self.settings, breaker_open=self.breaker.is_open)

    def close(self) -> None:
        if self._sync_client is not None:
            self._sync_client.close()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self.close()

    # --- requests ----------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        """One client per event loop (tests and the CLI may run several loops in turn)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            s = self.settings
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(s.generation_read_timeout, connect=s.generation_connect_timeout),
                headers=auth_headers(s),
                transport=self._transport,
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            )
            self._client_loop = loop
        return self._client

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(max(1, self.settings.generation_retries)),
            wait=wait_exponential(multiplier=0.25, max=4.0),
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )

    async def _stream_with_retries(self, body: dict[str, Any]) -> AsyncIterator[str]:
        """Retries cover opening the stream up to its first delta; later failures end the reply."""
        async for attempt in self._retrying():
            with attempt:
                chunks = self._chat(body)
                first = await anext(chunks, None)
        if first is None:
            return
        yield first
        try:
            async for delta in chunks:
                yield delta
        finally:
            await chunks.aclose()

    async def _chat(self, body: dict[str, Any]) -> AsyncIterator[str]:
        try:
            async with self._http().stream("POST", self.root + "/v1/chat/completions", json=body) as response:
                if response.status_code == 404 and body.get("model") != self._model:
                    # the server lost this adapter (a restart lost them all): the base model
                    # answers, and the adapters are loaded again on the next requests
                    self._loaded.clear()
                    body["model"] = self._model
                    raise _Transient("adapter not on the server")
                if response.status_code >= 500 or response.status_code == 429:
                    raise _Transient(f"HTTP {response.status_code}")
                if response.status_code >= 400:
                    text = (await response.aread()).decode("utf-8", "replace")[:300]
                    raise httpx.HTTPStatusError(
                        f"HTTP {response.status_code}: {text}", request=response.request, response=response
                    )
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        return
                    data = json.loads(payload)
                    if "error" in data:
                        raise _Transient(str(data["error"])[:200])
                    for choice in data.get("choices", []):
                        delta = (choice.get("delta") or {}).get("content")
                        if delta:
                            yield delta
        except (httpx.TransportError, json.JSONDecodeError) as exc:
            raise _Transient(_describe(exc)) from exc

    async def _ensure_model(self) -> None:
        """The served base model's name and context length, from /v1/models once."""
        if self._model is not None and (self._server_context or self._loaded_at):
            return
        await self._refresh_models()

    async def _refresh_models(self) -> None:
        try:
            response = await self._http().get(self.root + "/v1/models")
            response.raise_for_status()
            data = response.json().get("data", [])
        except httpx.TransportError as exc:
            raise _Transient(_describe(exc)) from exc
        except (httpx.HTTPError, ValueError):
            data = []
        bases = [m for m in data if not m.get("parent")]
        if self._model is None:
            if not bases:
                raise httpx.HTTPError("the server lists no model; set CONFIDANTE_GENERATION_MODEL")
            self._model = bases[0]["id"]
        for m in bases:
            if m.get("id") == self._model and m.get("max_model_len"):
                self._server_context = int(m["max_model_len"])
        self._loaded = {m["id"] for m in data if m.get("parent")}
        self._loaded_at = time.monotonic()

    async def _adapter_fields(self, person_id: str | None) -> dict[str, Any]:
        """The request fields that pick this person's adapter, or the base model's."""
        base = {"model": self._model}
        mode = self.settings.generation_adapters
        if mode == "none":
            return base
        name = None if person_id is None else await asyncio.to_thread(self.adapters.current_name, person_id)
        if mode == "llamacpp":
            return await self._llamacpp_fields(name)
        zero = self.settings.generation_zero_adapter
        if zero and not await self._vllm_ready(ZERO_ADAPTER):
            return base  # no row names an adapter until every row can (see ZERO_ADAPTER)
        if name is not None and await self._vllm_ready(name, person_id):
            return {"model": name}
        return {"model": ZERO_ADAPTER} if zero else base

    async def _vllm_ready(self, name: str, person_id: str | None = None) -> bool:
        if time.monotonic() - self._loaded_at > LOADED_TTL_SECONDS:
            await self._refresh_models()
        if name in self._loaded:
            return True
        if time.monotonic() < self._load_failed.get(name, 0.0):
            return False
        lock = self._load_locks.setdefault(name, asyncio.Lock())
        async with lock:
            if name in self._loaded:
                return True
            ok = await self._load(name, person_id)
            if ok:
                self._loaded.add(name)
            else:
                # the zero adapter appears with the first published one: look again soon
                wait = ZERO_RETRY_SECONDS if name == ZERO_ADAPTER else LOAD_RETRY_SECONDS
                self._load_failed[name] = time.monotonic() + wait
            return ok

    async def _load(self, name: str, person_id: str | None) -> bool:
        """Load a published adapter (the server restarted, or the worker's load did not reach it);
        one trained before generation moved to a server is published from the data dir first."""
        if name == ZERO_ADAPTER:
            return await asyncio.to_thread(self.adapters.zero)
        if not await asyncio.to_thread(self.adapters.is_published, name):
            if person_id is None:
                return False
            return await asyncio.to_thread(self.adapters.publish, person_id) == name
        try:
            response = await self._http().post(
                self.root + "/v1/load_lora_adapter",
                json={"lora_name": name, "lora_path": self.adapters.server_path(name)},
            )
        except httpx.TransportError as exc:
            raise _Transient(_describe(exc)) from exc
        ok = response.status_code == 200 or "already been loaded" in response.text
        if not ok:
            log.warning("adapter.load_failed", name=name, status=response.status_code)
        return ok

    async def _llamacpp_fields(self, name: str | None) -> dict[str, Any]:
        """llama.cpp picks adapters by id. A request without a `lora` field gets every adapter at
        its global scale (1 unless started with --lora-init-without-apply), so each request lists
        them all: the person's at 1, every other at 0 (all at 0 for the base model)."""
        if name not in self._lora_ids or time.monotonic() - self._loaded_at > LOADED_TTL_SECONDS:
            try:
                response = await self._http().get(self.root + "/lora-adapters")
                response.raise_for_status()
                listing = response.json()
            except httpx.TransportError as exc:
                raise _Transient(_describe(exc)) from exc
            except (httpx.HTTPError, ValueError):
                listing = []
            self._lora_ids = {Path(a["path"]).name.removesuffix(".gguf"): int(a["id"]) for a in listing}
            self._loaded_at = time.monotonic()
        chosen = self._lora_ids.get(name) if name else None
        mine = [{"id": chosen, "scale": 1.0}] if chosen is not None else []
        others = [{"id": i, "scale": 0.0} for i in sorted(self._lora_ids.values()) if i != chosen]
        return {"model": self._model, "lora": mine + others}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


def _local_tokenizer(path: str | None) -> Any:
    if not path:
        return None
    from transformers import AutoTokenizer

    from core.llm.model import ModelLoadError

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(
            f"CONFIDANTE_GENERATION_TOKENIZER={path!r}: no tokenizer there ({type(exc).__name__}). Point it "
            "at the served model's directory (its tokenizer files), or unset it to count with the "
            "server's /tokenize endpoint."
        ) from exc


def server_problem(settings: Settings, *, breaker_open: bool = False) -> str | None:
    """None when the generation server lists its models, else one sentence saying what to do."""
    url = settings.generation_url
    if breaker_open:
        return f"the generation server at {url} failed several requests in a row: check that it runs"
    try:
        response = httpx.get(server_root(url) + "/v1/models", headers=auth_headers(settings), timeout=3.0)
    except httpx.HTTPError as exc:
        return f"the generation server at {url} does not answer ({type(exc).__name__}): start it or fix CONFIDANTE_GENERATION_URL"
    if response.status_code in (401, 403):
        return f"the generation server at {url} refused the key: set CONFIDANTE_GENERATION_API_KEY"
    if response.status_code >= 400:
        return f"the generation server at {url} answered {response.status_code} to /v1/models"
    return None
