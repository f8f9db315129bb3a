"""Streamed, continuously batched generation on one base model.

One generation thread owns the model and runs a single loop: it prefills a newly arrived
request on its own (so its first token comes quickly), then merges that request's KV cache into
the running batch, and every step decodes one token for every row at once. New requests join at
token boundaries instead of waiting for a running batch to end; finished rows leave the batch.
Rows are left-padded to a common length and masked. Each row may name a per-person LoRA adapter:
the adapter registry (core/llm/adapters.py) applies all rows' adapters in one batched matmul per
projection, so a mixed batch costs little more than a plain one.

The event loop never blocks: the thread hands text deltas back with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from core.config import Settings
from core.llm.decode import LeanDecoder
from core.llm.model import LoadedModel, source_gguf
from core.llm.prefix_cache import PrefixCache, kv_layers
from core.llm.profiles import profile_for
from core.llm.sampling import RowState, Sampling, next_tokens, sentence_end_ids, visible

if TYPE_CHECKING:
    from core.llm.adapters import AdapterRegistry

log = structlog.get_logger(__name__)

_DONE = object()
_CLEAR_PREFIXES = object()  # queued, so the cache is only touched by the generation thread


@dataclass
class _Request:
    ids: list[int]
    max_new: int
    sampler: RowState
    adapter: str | None
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue
    generated: list[int] = field(default_factory=list)
    emitted: str = ""
    cancelled: bool = False
    slot: int = -1
    submitted: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None

    def send(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:  # the consumer's event loop is gone
            self.cancelled = True


@dataclass
class StreamStats:
    """Counters for benchmarks and metrics."""

    requests: int = 0
    tokens: int = 0
    steps: int = 0
    max_batch: int = 0
    ttft: list[float] = field(default_factory=list)


class Engine:
    """Generation for many concurrent conversations on one loaded model."""

    accepts_prefix = True  # stream(prefix=...) continues a reply whose start is given

    def __init__(
        self,
        loaded: LoadedModel,
        settings: Settings,
        *,
        adapters: AdapterRegistry | None = None,
        max_batch: int | None = None,
        decode: str | None = None,
    ) -> None:
        self.loaded = loaded
        self.settings = settings
        self.tokenizer = loaded.tokenizer
        self.model = loaded.model
        if adapters is None and getattr(settings, "adapters_enabled", True):
            from core.llm.adapters import AdapterRegistry

            # nothing is wrapped until the first person with an adapter is served
            adapters = AdapterRegistry(loaded.model, settings)
        self.adapters = adapters
        self.max_batch = max_batch or getattr(settings, "max_batch", 16)
        self.stats = StreamStats()
        self.prefixes = PrefixCache(int(getattr(settings, "prefix_cache_mb", 256) * 2**20))
        self._pending: queue.Queue[_Request | object | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = False
        # running batch state (touched only by the generation thread)
        self._rows: list[_Request] = []
        self._cache: Any = None
        self._mask: Any = None
        self._next: Any = None
        self._decoder, self._head = _split_head(loaded.model)
        # SDPA takes a ready boolean (rows, 1, 1, keys) mask; other attention kernels build their own
        self._sdpa = getattr(loaded.model.config, "_attn_implementation", None) == "sdpa"
        # `decode` (default: settings.decode_path): the lean step runs decode over the model's own
        # weights without transformers' per-layer overhead (core/llm/decode.py); "kernel" also
        # moves its matmuls onto the bundled GGUF's blocks, prepared in the background (a few
        # seconds) while the first replies use the bf16 weights
        decode = decode or getattr(settings, "decode_path", "kernel")
        self._lean = None
        self._blocks: dict[str, Any] | None = None  # ready for the generation thread to take up
        self._kernel_thread: threading.Thread | None = None
        self._step_threads: tuple[int, int] | None = None  # (in a step, outside) once kernels run
        # without the kernels the lean step is no faster than transformers' forward (docs/models.md:
        # 24 vs 26 tok/s for one row, 135 vs 163 for eight), so "kernel" falls back to the latter
        self._kernel_failed = False
        kernel = decode == "kernel" and source_gguf(loaded) is not None
        if (kernel or decode == "lean") and self._head is not None and LeanDecoder.supports(loaded.model):
            self._lean = LeanDecoder(loaded.model)
            if kernel:
                self._kernel_thread = threading.Thread(
                    target=self._prepare_blocks, name="confidante-decode-kernel", daemon=True
                )
                self._kernel_thread.start()
        # the model's default sampling; settings that are set override it
        self.profile = profile_for(loaded)
        self.sampling = self.profile.sampling.replace(
            temperature=getattr(settings, "temperature", None), top_p=getattr(settings, "top_p", None)
        )
        self._sentence_ends = sentence_end_ids(loaded.tokenizer)

    # --- text helpers ---------------------------------------------------------------------

    @property
    def context_tokens(self) -> int:
        return self.loaded.context_length

    def render(self, messages: list[dict]) -> str:
        """The prompt text for `messages` under the model's chat template, ready for a reply."""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_messages(self, messages: list[dict], prefix: str = "") -> list[int]:
        text = self.render(messages) + prefix
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # --- public generation API --------------------------------------------------------------

    async def stream(
        self,
        messages: list[dict],
        *,
        adapter: str | None = None,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        sampling: Sampling | None = None,
        prefix: str = "",
    ) -> AsyncIterator[str]:
        """Yield the reply's text as it is generated, ending at end-of-turn, a stop (a stop
        string, the reply repeating itself) or the length limit.

        `sampling` replaces the model's profile for this reply; `temperature`/`top_p` override
        one field (`temperature=0` is greedy). `adapter` names a person's adapter; with none (or
        none trained yet) the base model answers in the same batch. `prefix` is the reply's given
        start (core/grounding.py): the model continues after it, and only what it adds is yielded.
        """
        ids = self.encode_messages(messages, prefix)
        budget = self.context_tokens
        max_new = self.settings.max_new_tokens if max_new_tokens is None else max_new_tokens
        max_new = max(0, int(max_new))
        if len(ids) + 1 > budget:
            # The prompt builder fits prompts to context_tokens; this is a last guard, keeping the end.
            log.warning("engine.prompt_truncated", tokens=len(ids), context=budget)
            ids = ids[-(budget - 1) :]
        max_new = min(max_new, budget - len(ids))
        if max_new <= 0:
            return
        req = _Request(
            ids=ids,
            max_new=max_new,
            sampler=RowState(
                (sampling or self.sampling).replace(temperature=temperature, top_p=top_p),
                end_ids=self.loaded.eos_token_ids,
                sentence_end_ids=self._sentence_ends,
                seed=seed,
            ),
            adapter=adapter,
            loop=asyncio.get_running_loop(),
            out=asyncio.Queue(),
        )
        self._submit(req)
        try:
            while True:
                item = await req.out.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            req.cancelled = True  # the consumer stopped early: free the row at the next step

    async def generate(self, messages: list[dict], **kwargs: Any) -> str:
        """The whole reply as one string (evals, training data checks)."""
        return "".join([delta async for delta in self.stream(messages, **kwargs)])

    def forget_prefixes(self) -> None:
        """Drop every cached prompt prefix (a person asked to be forgotten)."""
        self._pending.put(_CLEAR_PREFIXES)

    def wait_for_kernel(self, timeout: float = 120.0) -> bool:
        """Wait until the decode kernels are prepared; True when the next steps use them."""
        if self._kernel_thread is not None:
            self._kernel_thread.join(timeout)
        return self._blocks is not None or (self._lean is not None and self._lean.head is not None)

    def _prepare_blocks(self) -> None:
        from core.llm import blockq

        start = time.perf_counter()
        try:
            lib = blockq.load_kernel(_kernel_dir(self.settings))
            gguf = source_gguf(self.loaded)
            blocks = None if lib is None or gguf is None else blockq.from_gguf(self.model, gguf, lib)
        except Exception:  # the bf16 weights keep working; never take the engine down for this
            log.exception("engine.decode_kernel_failed")
            blocks = None
        log.info(
            "engine.decode_kernel", ready=blocks is not None, seconds=round(time.perf_counter() - start, 1)
        )
        self._blocks = blocks
        self._kernel_failed = blocks is None  # transformers' forward from the next batch on

    def close(self) -> None:
        """Stop the generation thread (requests still running get an error)."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        self._pending.put(None)
        if thread is not None:
            thread.join(timeout=30)

    # --- the generation thread --------------------------------------------------------------

    def _submit(self, req: _Request) -> None:
        with self._lock:
            if self._stopping:
                raise RuntimeError("The engine is closed.")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="confidante-generate", daemon=True)
                self._thread.start()
        self.stats.requests += 1
        self._pending.put(req)

    def _run(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                try:
                    if not self._admit():
                        return
                    if self._rows:
                        self._step()
                except Exception as exc:  # never leave a caller waiting forever
                    log.exception("engine.failed")
                    error = RuntimeError(f"Generation failed: {exc}")
                    for req in self._rows:
                        req.send(error)
                        self._release(req)
                    self._reset_batch()

    def _admit(self) -> bool:
        """Take new requests (blocking only when idle); return False when asked to stop."""
        while len(self._rows) < self.max_batch:
            try:
                req = self._pending.get(block=not self._rows)
            except queue.Empty:
                return True
            if req is _CLEAR_PREFIXES:
                self.prefixes.clear()
                continue
            if req is None:
                for row in self._rows:
                    row.send(RuntimeError("The engine was closed."))
                return False
            if req.cancelled:
                continue
            try:
                self._prefill(req)
            except Exception as exc:
                log.exception("engine.prefill_failed")
                req.send(RuntimeError(f"Generation failed: {exc}"))
                self._release(req)
        return True

    def _set_rows(self, slots: list[int]) -> None:
        if self.adapters is not None:
            self.adapters.set_rows(slots)

    def _prefill(self, req: _Request) -> None:
        import torch
        from transformers import DynamicCache

        if req.adapter and self.adapters is not None:
            req.slot = self.adapters.acquire(req.adapter)
        device = self.model.device
        key = self.adapters.slot_key(req.slot) if req.slot >= 0 and self.adapters else "base"
        hit = self.prefixes.lookup(key, req.ids)
        done, cache = 0, DynamicCache()
        if hit is not None:
            done, layers = hit
            cache = DynamicCache(ddp_cache_data=layers)
        ids = torch.tensor([req.ids[done:]], dtype=torch.long, device=device)
        self._set_rows([req.slot])
        out = self.model(
            input_ids=ids,
            attention_mask=torch.ones((1, len(req.ids)), dtype=torch.long, device=device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.prefixes.store(key, req.ids, kv_layers(cache))
        token = self._sample(out.logits[:, -1, :], [req])[0]
        if self._emit(req, token):
            self._release(req)
            return
        self._merge(req, cache, token)

    def _merge(self, req: _Request, cache: Any, token: int) -> None:
        """Add one prefilled row to the running batch, left-padding whichever side is shorter."""
        import torch

        new_kv = [(layer.keys, layer.values) for layer in cache.layers]
        new_len = new_kv[0][0].shape[-2]
        device = new_kv[0][0].device
        new_mask = torch.ones((1, new_len), dtype=torch.long, device=device)
        new_next = torch.tensor([token], dtype=torch.long, device=device)
        if not self._rows:
            self._cache = _batch_cache(new_kv)
            self._mask, self._next = new_mask, new_next
            self._rows.append(req)
            return
        old_len = self._mask.shape[1]
        target = max(old_len, new_len)
        rows = len(self._rows) + 1
        layers = []
        for layer, (k_new, v_new) in zip(self._cache.layers, new_kv, strict=True):
            # one copy of the batch into a buffer with room for the new row and for the next tokens
            merged = []
            for old, new in ((layer.keys, k_new), (layer.values, v_new)):
                b, h, _, d = old.shape
                out = old.new_zeros((rows, h, target + _SPARE_TOKENS, d))
                out[:b, :, target - old_len : target] = old
                out[b:, :, target - new_len : target] = new
                merged.append(out)
            layers.append((merged[0], merged[1], target))
        self._cache = _slab_cache(layers)

        def pad_mask(m: Any, length: int) -> Any:
            if length == target:
                return m
            return torch.cat([m.new_zeros((m.shape[0], target - length)), m], dim=1)

        self._mask = torch.cat([pad_mask(self._mask, old_len), pad_mask(new_mask, new_len)], dim=0)
        self._next = torch.cat([self._next, new_next])
        self._rows.append(req)

    def _step(self) -> None:
        """One decode step for every row in the batch.

        The step's cost is mostly weight traffic, so what is avoidable per token is kept out: keys and
        values are written in place into preallocated buffers (no copy of the whole cache per layer),
        the 4-D attention mask is built once here instead of by the model, and the tied output
        projection over the whole vocabulary runs as one matmul laid out for a few rows.
        """
        import torch

        if self._blocks is not None and self._lean is not None:
            # taken up between steps, by this thread only. In this (non-main) thread every
            # OpenMP region of a small torch op costs ~45 us more than in the main thread, so
            # once the kernels carry the matmuls (on the threads torch had), torch's own ops in a
            # decode step run on one thread (docs/models.md: 27 -> 22.6 ms a step)
            threads = torch.get_num_threads()
            self._lean.use_blocks(self._blocks, threads=threads)
            self._blocks = None
            self._step_threads = (1, threads)
        single = self._step_threads is not None and len(self._rows) <= _SINGLE_THREAD_ROWS
        if single:
            torch.set_num_threads(self._step_threads[0])
        try:
            self._decode_step()
        finally:
            if single:
                torch.set_num_threads(self._step_threads[1])

    def _decode_step(self) -> None:
        import torch

        mask = torch.cat([self._mask, self._mask.new_ones((self._mask.shape[0], 1))], dim=1)
        positions = self._mask.sum(dim=1, keepdim=True)
        self._set_rows([r.slot for r in self._rows])
        if self._lean is not None:
            lora = self.adapters is not None and self.adapters.active
            hidden = self._lean.step(self._next, positions[:, 0], mask, self._cache, lora=lora)
        else:
            hidden = self._decoder(
                input_ids=self._next[:, None],
                attention_mask=mask.bool()[:, None, None, :] if self._sdpa else mask,
                position_ids=positions,
                cache=self._cache,
                use_cache=True,
            ).last_hidden_state[:, -1, :]
        self._mask = mask
        self.stats.steps += 1
        self.stats.max_batch = max(self.stats.max_batch, len(self._rows))
        tokens = self._sample(self._logits(hidden), self._rows)
        keep: list[int] = []
        for i, (req, token) in enumerate(zip(self._rows, tokens, strict=True)):
            if req.cancelled or self._emit(req, token):
                self._release(req)
            else:
                keep.append(i)
        if len(keep) == len(self._rows):
            self._next = torch.tensor(tokens, dtype=torch.long, device=self._next.device)
            return
        if not keep:
            self._reset_batch()
            return
        index = torch.tensor(keep, dtype=torch.long, device=self._mask.device)
        self._rows = [self._rows[i] for i in keep]
        self._next = torch.tensor([tokens[i] for i in keep], dtype=torch.long, device=self._next.device)
        self._mask = self._mask.index_select(0, index)
        # drop columns that are padding for every remaining row
        first = int((self._mask.cumsum(dim=1) == 0).sum(dim=1).min().item())
        self._mask = self._mask[:, first:]
        self._cache = _batch_cache(
            [
                (
                    layer.keys.index_select(0, index)[:, :, first:],
                    layer.values.index_select(0, index)[:, :, first:],
                )
                for layer in self._cache.layers
            ]
        )

    def _logits(self, hidden: Any) -> Any:
        """Next-token logits for the last position of every row, (rows, vocab)."""
        import torch

        if self._lean is not None and self._lean.head is not None:
            return self._lean.head(hidden)  # the output head over GGUF blocks (core/llm/blockq.py)
        head = self._head
        if head is None:  # the fallback decoder returned the model's logits already
            return hidden
        # (vocab, hidden) @ (hidden, rows): for a few rows this layout streams the 49k-row matrix
        # once without repacking it; linear() was about 2x slower at 8 rows here
        return (
            torch.mm(head, hidden.t()).t()
            if hidden.shape[0] > 1
            else torch.nn.functional.linear(hidden, head)
        )

    def _reset_batch(self) -> None:
        self._rows, self._cache, self._mask, self._next = [], None, None, None
        if self._kernel_failed:
            self._lean = None

    def _release(self, req: _Request) -> None:
        if req.slot >= 0 and self.adapters is not None:
            self.adapters.release(req.slot)
            req.slot = -1

    def _sample(self, logits: Any, rows: list[_Request]) -> list[int]:
        """Each row's next token under its own settings (core/llm/sampling.py)."""
        return next_tokens(logits, [req.sampler for req in rows])

    def _emit(self, req: _Request, token: int) -> bool:
        """Record one token and send the new text; return True when the request is finished."""
        now = time.perf_counter()
        if req.first_token_at is None:
            req.first_token_at = now
            self.stats.ttft.append(now - req.submitted)
        if req.cancelled:
            return True
        if token in self.loaded.eos_token_ids:
            req.send(_DONE)
            return True
        req.generated.append(token)
        req.sampler.observe(token)
        self.stats.tokens += 1
        text = self.tokenizer.decode(
            req.generated, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        done = len(req.generated) >= req.max_new or len(req.ids) + len(req.generated) >= self.context_tokens
        text, stopped = visible(text, req.sampler.sampling, final=done)
        done = done or stopped
        # hold back a partial UTF-8 character until its last byte arrives (or the reply ends)
        if text.startswith(req.emitted) and (done or not text.endswith("\ufffd")):
            delta = text[len(req.emitted) :]
            if delta:
                req.emitted = text
                req.send(delta)
        if done:
            req.send(_DONE)
        return done


# --- the running batch's KV cache -------------------------------------------------------------

_SINGLE_THREAD_ROWS = 4  # up to this many rows, torch's small ops run single-threaded in a step
_SPARE_TOKENS = 64  # room left after the longest row, so decode steps append without copying


def _kernel_dir(settings: Settings) -> Any:
    """Where the compiled decode kernel is kept: next to the converted model (`confidante prepare`
    builds it there), or in the data dir when the models directory is read-only (an image)."""
    import os
    from pathlib import Path

    from core.llm.blockq import kernel_path

    models = Path(settings.models_dir)
    usable = kernel_path(models).exists() or os.access(models, os.W_OK)
    return models if usable else Path(settings.data_dir) / "kernels"


def _split_head(model: Any) -> tuple[Any, Any]:
    """The decoder stack and the output projection's weight (None when it is not a plain Linear:
    then the whole model runs and its own head computes the logits)."""
    import torch

    decoder = getattr(model, "model", None)
    head = getattr(model, "lm_head", None)
    if decoder is None or not isinstance(head, torch.nn.Linear) or head.bias is not None:
        return _WholeModel(model), None
    return decoder, head.weight


class _WholeModel:
    """Fallback decoder: the full model, returning its logits as `last_hidden_state`."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, **kwargs: Any) -> Any:
        from types import SimpleNamespace

        out = self.model(**kwargs)
        return SimpleNamespace(last_hidden_state=out.logits)


@functools.cache
def _slab_layer_type() -> Any:
    from transformers.cache_utils import DynamicLayer

    class SlabLayer(DynamicLayer):
        """A layer's keys/values in a buffer with spare room: a decode step writes its one new
        position in place, where DynamicLayer concatenates (copies) the whole cache every token."""

        def __init__(self, keys: Any, values: Any, length: int) -> None:
            super().__init__()
            self._k, self._v, self.length = keys, values, length
            self.device = keys.device
            self.is_initialized = True
            self._views()

        def _views(self) -> None:
            self.keys = self._k[:, :, : self.length]
            self.values = self._v[:, :, : self.length]

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            n = key_states.shape[-2]
            if self.length + n > self._k.shape[-2]:
                grow = max(n, _SPARE_TOKENS, self.length // 2)
                for name in ("_k", "_v"):
                    old = getattr(self, name)
                    b, h, cap, d = old.shape
                    new = old.new_empty((b, h, cap + grow, d))
                    new[:, :, : self.length] = old[:, :, : self.length]
                    setattr(self, name, new)
            self._k[:, :, self.length : self.length + n] = key_states
            self._v[:, :, self.length : self.length + n] = value_states
            self.length += n
            self._views()
            return self.keys, self.values

    return SlabLayer


def _slab_cache(layers: list[tuple[Any, Any, int]]) -> Any:
    """A DynamicCache whose layers are (buffer keys, buffer values, filled length) slabs."""
    from transformers import DynamicCache

    slab = _slab_layer_type()
    cache = DynamicCache()
    cache.layers = [slab(k, v, n) for k, v, n in layers]
    return cache


def _batch_cache(kv: list[tuple[Any, Any]]) -> Any:
    """A cache holding these (keys, values) per layer, with spare room for the next tokens."""
    layers = []
    for keys, values in kv:
        b, h, n, d = keys.shape
        k = keys.new_empty((b, h, n + _SPARE_TOKENS, d))
        v = values.new_empty((b, h, n + _SPARE_TOKENS, d))
        k[:, :, :n] = keys
        v[:, :, :n] = values
        layers.append((k, v, n))
    return _slab_cache(layers)
