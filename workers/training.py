"""Refresh a person's LoRA adapter: their own data -> training -> evaluation gate -> promotion.

`refresh_adapter(person_id, store, settings)` is the body of the Celery task. It builds a training
set from this person's data only (current memories turned into second-person question->answer
pairs, plus assistant replies they accepted), mixes in the shipped replay set so the model keeps
its general skills, trains a small LoRA with PEFT, and promotes the new version only if a
held-out slice of the person's own Q->A improved and perplexity on a fixed general set did not
get more than `adapter_ppl_tolerance` worse than the base model's. A per-person file lock keeps
two refreshes from both promoting; sources are re-checked before promotion so data forgotten
during training never reaches a served adapter.
"""

from __future__ import annotations

import math
import random
import resource
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from core.config import Settings
from core.llm.adapters import AdapterStore, AdapterVersion, plain_copy
from core.llm.model import LoadedModel, load_model
from core.llm.served_adapters import ServedAdapters
from workers.replay import Pair, context_pairs, replay_sets
from workers.threads import ThreadGovernor, torch_threads
from workers.training_data import (  # noqa: F401  (re-exported: callers import them from here)
    PersonData,
    answer_forms,
    build_person_pairs,
    questions_for,
    split_heldout,
    to_first_person,
    to_second_person,
)

log = structlog.get_logger(__name__)

Progress = Callable[[str, int, int], None]

# --- training and scoring -------------------------------------------------------------------


def _encode(
    tokenizer: Any, system: str, pair: Pair, eos_id: int, max_len: int = 256
) -> tuple[list[int], list[int]]:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": pair.question}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(pair.answer, add_special_tokens=False)["input_ids"] + [eos_id]
    ids = (p_ids + a_ids)[-max_len:]
    labels = ([-100] * len(p_ids) + a_ids)[-max_len:]
    return ids, labels


def _batches(
    encoded: list[tuple[list[int], list[int]]], size: int, pad_id: int, rng: random.Random | None
) -> list[tuple[Any, Any, Any]]:
    import torch

    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))  # little padding
    groups = [order[i : i + size] for i in range(0, len(order), size)]
    if rng is not None:
        rng.shuffle(groups)
    out = []
    for group in groups:
        width = max(len(encoded[i][0]) for i in group)
        ids = torch.full((len(group), width), pad_id, dtype=torch.long)
        labels = torch.full((len(group), width), -100, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, i in enumerate(group):
            x, y = encoded[i]
            ids[row, : len(x)] = torch.tensor(x)
            labels[row, : len(y)] = torch.tensor(y)
            mask[row, : len(x)] = 1
        out.append((ids, labels, mask))
    return out


def answer_logits(model: Any, ids: Any, labels: Any, mask: Any) -> tuple[Any, Any]:
    """Logits at the answer positions only, and their target tokens.

    Two things a plain `model(input_ids, labels=...)` would waste on this data are skipped, with
    the same result: every row starts with the same system prompt (about 60% of its tokens), so
    that shared prefix runs once, as one row, and its keys and values are shared by the batch
    (gradients flow back through them); and the output projection over the whole vocabulary runs
    only where there is an answer token to score, not on the prompt and the padding.
    """
    import torch
    from transformers import DynamicCache

    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = core.get_decoder(), core.get_output_embeddings()
    device = head.weight.device  # batches are built on the CPU; a GPU worker's model is on CUDA
    ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
    rows, width = ids.shape
    answer = labels != -100
    # the shared prefix: identical, unmasked, unlabelled in every row, and ending before the
    # position whose output predicts the first answer token
    same = (ids == ids[:1]).all(dim=0) & mask.bool().all(dim=0) & ~answer.any(dim=0)
    prefix = int(same.long().cumprod(dim=0).sum())
    first_answer = int(answer.long().argmax(dim=1).min()) if bool(answer.any()) else width
    prefix = max(0, min(prefix, first_answer - 1, width - 1))
    if rows > 1 and prefix >= 2:
        cache = DynamicCache()
        decoder(input_ids=ids[:1, :prefix], cache=cache, use_cache=True)
        for layer in cache.layers:
            layer.keys = layer.keys.expand(rows, -1, -1, -1)
            layer.values = layer.values.expand(rows, -1, -1, -1)
        positions = torch.arange(prefix, width, device=ids.device).expand(rows, -1)
        hidden = decoder(
            input_ids=ids[:, prefix:],
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
        ).last_hidden_state
    else:
        prefix = 0
        hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
    target = labels[:, prefix + 1 :]
    keep = target != -100
    return head(hidden[:, :-1][keep]), target[keep]


def answer_nll(
    model: Any, tokenizer: Any, pairs: list[Pair], system: str, eos_id: int, batch_size: int = 16
) -> float:
    """Mean negative log-likelihood per answer token (the gate's score; exp() is perplexity)."""
    import torch
    import torch.nn.functional as F

    if not pairs:
        return float("nan")
    encoded = [_encode(tokenizer, system, p, eos_id) for p in pairs]
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad(), _autocast(model):
        for ids, labels, mask in _batches(encoded, batch_size, tokenizer.pad_token_id or 0, None):
            logits, target = answer_logits(model, ids, labels, mask)
            total += float(F.cross_entropy(logits.float(), target, reduction="sum"))
            count += int(target.numel())
    return total / max(count, 1)


def train_dtype(setting: str, device: str) -> Any:
    """The dtype the frozen base runs in while an adapter trains and is judged.

    bf16 where the hardware does bf16 matmuls natively (CUDA, CPUs with AVX512-BF16/AMX): a
    refresh on 200 pairs ran 2.7x faster than fp32 here, and serving runs the same bf16 base, so
    the gate judges what will be served. The LoRA weights and the optimizer stay fp32 either way.
    """
    import torch

    from core.llm.model import _cpu_has_bf16

    if setting != "auto":
        return getattr(torch, setting)
    return torch.bfloat16 if device.startswith("cuda") or _cpu_has_bf16() else torch.float32


def _autocast(model: Any) -> Any:
    """bf16 autocast when the base is bf16, so the fp32 LoRA matmuls run in bf16 too."""
    import torch

    param = next(model.parameters())
    return torch.autocast(param.device.type, dtype=torch.bfloat16, enabled=param.dtype == torch.bfloat16)


def train_lora(
    base: Any,
    tokenizer: Any,
    pairs: list[Pair],
    *,
    system: str,
    eos_id: int,
    rank: int = 8,
    epochs: int = 3,
    lr: float = 2e-3,
    batch_size: int = 8,
    init_from: Path | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    min_steps: int = 0,
    max_steps: int | None = None,
    dtype: Any = None,
    adaptive_threads: bool = False,
) -> Any:
    """A PEFT LoRA (q/k/v/o) trained on `pairs` (loss on answer tokens only) over a copy of `base`.

    `epochs` passes over the data, but at least `min_steps` optimizer steps (a person with a
    dozen facts gets more passes: a few steps teach nothing) and at most `max_steps` (a refresh
    on a large set stays within its time budget; the last pass is then partial). The copy of the
    base runs in `dtype` (default fp32; see `train_dtype`), the LoRA weights are always fp32.
    `adaptive_threads`: a ThreadGovernor picks the torch thread count before every step.
    """
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    torch.manual_seed(seed)
    model = plain_copy(base).to(dtype or torch.float32)  # the served base is untouched
    if next(model.parameters()).device.type == "cpu":
        # CPU SDPA's backward took a third of each step on these short rows; eager does not
        model.set_attn_implementation("eager")
    if init_from is not None:
        peft_model = PeftModel.from_pretrained(model, init_from, is_trainable=True)
    else:
        config = LoraConfig(
            r=rank,
            lora_alpha=2 * rank,
            lora_dropout=0.0,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, config)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    peft_model.train()
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    encoded = [_encode(tokenizer, system, p, eos_id) for p in pairs]
    rng = random.Random(seed)
    total_steps = max(epochs * math.ceil(len(encoded) / batch_size), min_steps)
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.05, 1 - s / max(total_steps, 1)))
    governor = ThreadGovernor() if adaptive_threads else None
    step = 0
    while step < total_steps:
        for ids, labels, mask in _batches(encoded, batch_size, tokenizer.pad_token_id or 0, rng):
            if step >= total_steps:
                break
            with _autocast(peft_model):
                logits, target = answer_logits(peft_model, ids, labels, mask)
            loss = torch.nn.functional.cross_entropy(logits.float(), target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if governor is not None:
                governor.step()
            if progress:
                progress("training", step, total_steps)
    peft_model.eval()
    peft_model.threads_used = governor.history if governor is not None else []
    return peft_model


@dataclass
class GateResult:
    passed: bool
    heldout_before: float
    heldout_after: float
    general_ppl_base: float
    general_ppl_after: float
    reason: str = ""

    @property
    def ppl_change(self) -> float:
        return self.general_ppl_after / self.general_ppl_base - 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "heldout_nll_before": round(self.heldout_before, 4),
            "heldout_nll_after": round(self.heldout_after, 4),
            "general_ppl_base": round(self.general_ppl_base, 3),
            "general_ppl_after": round(self.general_ppl_after, 3),
            "general_ppl_change": round(self.ppl_change, 4),
            "passed": self.passed,
            "reason": self.reason,
        }


def evaluate_gate(
    candidate: Any,
    tokenizer: Any,
    heldout: list[Pair],
    general: list[Pair],
    *,
    system: str,
    eos_id: int,
    tolerance: float,
    reference: Path | None = None,
    base_general: float | None = None,
) -> GateResult:
    """Held-out personal Q->A must improve over what is served now (the current adapter, else the
    base); general perplexity must stay within `tolerance` of the base model's.

    `base_general` is the base model's NLL on `general` when already known (it only depends on
    the base model and the system prompt, so a worker computes it once, not per refresh).
    """
    if base_general is None or reference is None:
        with candidate.disable_adapter():
            if base_general is None:
                base_general = answer_nll(candidate, tokenizer, general, system, eos_id)
            if reference is None:
                before = answer_nll(candidate, tokenizer, heldout, system, eos_id)
    if reference is not None:
        active = candidate.active_adapter
        candidate.load_adapter(reference, adapter_name="reference")
        candidate.set_adapter("reference")
        before = answer_nll(candidate, tokenizer, heldout, system, eos_id)
        candidate.set_adapter(active)
        candidate.delete_adapter("reference")
    after = answer_nll(candidate, tokenizer, heldout, system, eos_id)
    general_after = answer_nll(candidate, tokenizer, general, system, eos_id)
    result = GateResult(True, before, after, math.exp(base_general), math.exp(general_after))
    if not heldout:
        result.passed, result.reason = False, "no held-out questions to judge the adapter on"
    elif not after < before:
        result.passed, result.reason = False, "held-out personal answers did not improve"
    elif result.ppl_change > tolerance:
        result.passed, result.reason = (
            False,
            f"general perplexity rose {result.ppl_change:.1%} (limit {tolerance:.0%})",
        )
    return result


# --- refresh, promotion, rollback, forgetting ---------------------------------------------


@dataclass
class RefreshResult:
    status: str  # promoted | rejected | skipped | busy | dropped
    version: str | None = None
    reason: str = ""
    scores: dict[str, Any] = field(default_factory=dict)
    train_size: int = 0
    seconds: float = 0.0
    peak_rss_mb: float = 0.0


_TRAINING_MODEL: dict[tuple[str, str], LoadedModel] = {}


# base model -> {(system prompt, eos id, general set): its NLL there}; weak, so tests' models go
_BASE_GENERAL: weakref.WeakKeyDictionary[Any, dict[tuple, float]] = weakref.WeakKeyDictionary()


def training_model(settings: Settings) -> LoadedModel:
    """The base model in this worker process, loaded once, in the dtype refreshes train in, on
    CONFIDANTE_DEVICE (auto: CUDA where there is one: a GPU worker on the `adapters` queue trains
    with the same code, in bf16)."""
    import torch

    from core.llm.model import _device

    device = _device(settings)
    dtype = "bfloat16" if train_dtype(settings.adapter_train_dtype, device) == torch.bfloat16 else "float32"
    key = (settings.model, dtype, device)
    if key not in _TRAINING_MODEL:
        _TRAINING_MODEL[key] = load_model(settings.model_copy(update={"dtype": dtype, "device": device}))
    return _TRAINING_MODEL[key]


def _still_present(person_id: str, store: Any, sources: Iterable[str]) -> bool:
    wanted = set(sources)
    have = {m.id for m in store.memories_of(person_id, current_only=True)}
    have |= {t.id for t in store.turns_of(person_id)}
    return wanted <= have


def refresh_adapter(
    person_id: str,
    store: Any,
    settings: Settings,
    *,
    force: bool = False,
    loaded: LoadedModel | None = None,
    progress: Progress | None = None,
    override_pairs: list[Pair] | None = None,
) -> RefreshResult:
    """Train, gate and maybe promote a new adapter version for one person (the Celery task body).

    `override_pairs` replaces the person's Q->A training pairs (used to test the gate with a
    deliberately harmful adapter); held-out pairs still come from the person's real data.
    """
    adapters = AdapterStore(settings)
    start = time.perf_counter()
    with adapters.training_lock(person_id) as got:
        if not got:
            return RefreshResult("busy", reason="another refresh of this person is running")
        data = build_person_pairs(person_id, store, settings)
        previous = adapters.current(person_id)
        stale = adapters.is_stale(person_id)
        if not data.pairs:
            if previous is not None or stale:
                drop_versions(person_id, settings, [v.version for v in adapters.versions(person_id)])
                return RefreshResult("dropped", reason="no data left to train on")
            return RefreshResult("skipped", reason="no data yet")
        if previous is not None and not stale and "base_fingerprint" in previous.meta:
            loaded = loaded or training_model(settings)
            if previous.meta["base_fingerprint"] != loaded.fingerprint:
                stale = True  # trained for another base model: start over on this one
        known = set(previous.meta.get("sources", [])) if previous and not stale else set()
        new_items = len(set(data.sources) - known)
        if not force and not stale and new_items < settings.adapter_min_new_items:
            return RefreshResult(
                "skipped", reason=f"{new_items} new items (< {settings.adapter_min_new_items})"
            )

        loaded = loaded or training_model(settings)
        base = loaded.fingerprint
        tok = loaded.tokenizer
        eos_id = tok.eos_token_id
        system = settings.persona
        train, heldout = split_heldout(data)
        if not heldout:  # the gate could not judge it: do not spend a training on it
            return RefreshResult("skipped", reason="no fact with enough wordings to hold out yet")
        if override_pairs is not None:
            train = override_pairs
        replay, general = replay_sets()
        ratio = settings.adapter_replay_ratio
        by_ratio = int(len(train) * ratio / max(1e-6, 1 - ratio))
        n_replay = min(len(replay), max(by_ratio, settings.adapter_min_replay))
        n_context = round(len(train) * settings.adapter_context_share)
        mixed = (
            train + random.Random(len(train)).sample(replay, n_replay) + context_pairs(n_context, len(train))
        )
        init_from = previous.path if previous is not None and not stale else None
        dtype = train_dtype(settings.adapter_train_dtype, loaded.device)
        with torch_threads(settings.adapter_train_threads):
            candidate = train_lora(
                loaded.model, tok, mixed, system=system, eos_id=eos_id, rank=settings.adapter_rank,
                epochs=settings.adapter_train_epochs, init_from=init_from, progress=progress,
                min_steps=settings.adapter_min_steps, max_steps=settings.adapter_max_steps, dtype=dtype,
                batch_size=settings.adapter_batch_size, lr=settings.adapter_lr,
                adaptive_threads=settings.adapter_train_threads == 0,
            )  # fmt: skip
        if progress:
            progress("evaluating", 0, 1)
        cached = _BASE_GENERAL.setdefault(loaded.model, {})
        general_key = (system, eos_id, str(dtype), tuple(general))
        with torch_threads(settings.adapter_train_threads):
            gate = evaluate_gate(
                candidate, tok, heldout, general, system=system, eos_id=eos_id,
                tolerance=settings.adapter_ppl_tolerance, reference=previous.path if previous and not stale else None,
                base_general=cached.get(general_key),
            )  # fmt: skip
        cached[general_key] = math.log(gate.general_ppl_base)
        if gate.passed and not _still_present(person_id, store, data.sources):
            gate.passed, gate.reason = False, "some training data was forgotten during training"
        name, tmp = adapters.new_version_dir(person_id)
        candidate.save_pretrained(tmp)
        for extra in tmp.glob("README.md"):
            extra.unlink()
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        meta = {
            "version": name,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "status": "current" if gate.passed else "rejected",
            "train_size": len(train),
            "replay_size": n_replay,
            "context_size": n_context,
            "heldout_size": len(heldout),
            "from_version": previous.version if init_from else None,
            "base_model": loaded.name,
            "base_fingerprint": base,
            "scores": gate.as_dict(),
            "sources": data.sources,  # ids only, never text
            "seconds": round(seconds, 1),
            "peak_rss_mb": round(peak),
            "mean_threads": round(sum(used) / len(used), 2) if (used := candidate.threads_used) else None,
        }
        adapters.commit_version(person_id, name, tmp, meta)
        if gate.passed:
            adapters.set_current(person_id, name)
            if previous is not None:
                adapters.update_meta(previous, status="previous")
            sync_server(person_id, settings)
            person = store.person(person_id)
            if person is not None:
                person.adapter_version = name
                store.save_person(person)
        log.info(
            "adapter.refresh",
            status=meta["status"],
            version=name,
            seconds=round(seconds, 1),
            reason=gate.reason,
        )
        return RefreshResult(
            "promoted" if gate.passed else "rejected",
            name,
            gate.reason,
            gate.as_dict(),
            len(train),
            seconds,
            peak,
        )


def rollback(person_id: str, settings: Settings, to: str | None = None) -> AdapterVersion | None:
    """Serve an earlier accepted version again (default: the one before the current)."""
    adapters = AdapterStore(settings)
    with adapters.training_lock(person_id, wait=True):
        versions = [v for v in adapters.versions(person_id) if v.status != "rejected"]
        current = adapters.current_name(person_id)
        if to is not None:
            target = next((v for v in versions if v.version == to), None)
            if target is None:
                raise ValueError(
                    f"No accepted version {to!r} for this person; see `confidante adapter list`."
                )
        else:
            older = [v for v in versions if current is None or v.version < current]
            older = [v for v in older if v.version != current]
            if not older:
                raise ValueError("There is no earlier accepted version to roll back to.")
            target = older[-1]
        for v in versions:
            if v.version == current:
                adapters.update_meta(v, status="rolled_back")
        adapters.set_current(person_id, target.version)
        adapters.update_meta(target, status="current")
        sync_server(person_id, settings)
        return target


def list_versions(person_id: str, settings: Settings) -> list[dict[str, Any]]:
    """What `confidante adapter list` shows: version, date, status, train size, gate scores."""
    adapters = AdapterStore(settings)
    rows = []
    for v in adapters.versions(person_id):
        scores = v.meta.get("scores", {})
        rows.append(
            {
                "version": v.version,
                "created_at": v.meta.get("created_at", ""),
                "status": v.status,
                "train_size": v.meta.get("train_size", 0),
                "heldout_nll_before": scores.get("heldout_nll_before"),
                "heldout_nll_after": scores.get("heldout_nll_after"),
                "general_ppl_change": scores.get("general_ppl_change"),
                "reason": scores.get("reason", ""),
                "stale": adapters.is_stale(person_id),
            }
        )
    return rows


def drop_versions(person_id: str, settings: Settings, names: Iterable[str]) -> None:
    import shutil

    adapters = AdapterStore(settings)
    names = set(names)
    if adapters.current_name(person_id) in names:
        adapters.set_current(person_id, None)
    for v in adapters.versions(person_id):
        if v.version in names:
            shutil.rmtree(v.path, ignore_errors=True)
    sync_server(person_id, settings)


def memory_changed(person_id: str, store: Any, settings: Settings) -> list[str]:
    """Something was forgotten: delete every version trained on data that is gone (the weights
    hold it), fall back to the base model if the current one was among them, and mark the
    person for a retrain from scratch. Returns the deleted versions."""
    adapters = AdapterStore(settings)
    versions = adapters.versions(person_id)
    if not versions:
        return []
    have = {m.id for m in store.memories_of(person_id, current_only=True)}
    have |= {t.id for t in store.turns_of(person_id)}
    gone = [v.version for v in versions if not set(v.meta.get("sources", [])) <= have]
    if gone:
        adapters.mark_stale(person_id, "trained on forgotten data")
        drop_versions(person_id, settings, gone)
        log.info("adapter.forgotten", dropped=len(gone))
    return gone


def forget_person(person_id: str, settings: Settings) -> None:
    """The person was erased: every adapter version goes too, on the serving engine as well."""
    ServedAdapters(settings).withdraw(person_id)
    AdapterStore(settings).drop_person(person_id)


def sync_server(person_id: str, settings: Settings) -> None:
    """With a serving engine: publish what this person's replies should use now (loading it
    there) and unload every other version of theirs; a no-op without CONFIDANTE_GENERATION_URL."""
    served = ServedAdapters(settings)
    if served.mode == "none":
        return
    try:
        served.publish(person_id)
    except Exception as exc:  # the promotion stands; the chat process publishes on first use
        log.warning("adapter.publish_failed", error=f"{type(exc).__name__}: {exc}"[:200])
