"""Per-person LoRA adapters: versions on disk, and serving many of them in one batch.

On disk (written by workers/training.py, read here), under `<data_dir>/adapters/<person key>/`:
`versions/v0001/` holds PEFT's `adapter_model.safetensors` + `adapter_config.json` and our
`meta.json` (status, scores, train size); `current` names the version replies use. Switching is
one `os.replace` of `current`, and a version directory is complete before it is named, so a reply
never sees half an adapter. A `stale` marker (the person forgot something the adapter learned
from) makes serving fall back to the base model until a retrain.

Serving: the registry keeps up to N adapters in fixed "slots" of stacked LoRA matrices inside the
base model's q/k/v/o projections. Each forward gets one slot index per batch row; every wrapped
projection gathers its rows' A and B and applies them with two batched matmuls (the Punica /
S-LoRA idea), so a batch mixing 8 people's adapters costs about what a plain batch costs,
instead of PEFT's loop over adapters in every layer.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch
from torch import nn

from core.config import Settings
from core.llm.model import base_fingerprint
from core.metrics import ADAPTER_CACHE

log = structlog.get_logger(__name__)

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
META = "meta.json"
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


class AdapterError(RuntimeError):
    """An adapter could not be used; the message says why and what to do."""


# --- versions on disk -----------------------------------------------------------------------


@dataclass
class AdapterVersion:
    version: str
    path: Path
    meta: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.meta.get("status", "unknown"))


def person_key(person_id: str) -> str:
    """A filesystem-safe, fixed-length directory name for any person id (quotes, slashes, ...)."""
    return hashlib.sha256(person_id.encode("utf-8")).hexdigest()[:24]


class AdapterStore:
    """The adapter versions of every person, under the data dir."""

    def __init__(self, settings: Settings) -> None:
        self.root = Path(settings.data_dir) / "adapters"

    def person_dir(self, person_id: str) -> Path:
        return self.root / person_key(person_id)

    def versions(self, person_id: str) -> list[AdapterVersion]:
        base = self.person_dir(person_id) / "versions"
        if not base.exists():
            return []
        current = self.current_name(person_id)
        out = []
        for path in sorted(base.iterdir()):
            if not path.is_dir() or path.name.startswith("."):
                continue
            try:
                meta = json.loads((path / META).read_text())
            except (OSError, ValueError):
                continue  # a version being written, or damaged: never served
            if path.name == current:
                meta["status"] = "current"
            elif meta.get("status") == "current":
                meta["status"] = "previous"
            out.append(AdapterVersion(path.name, path, meta))
        return out

    def current_name(self, person_id: str) -> str | None:
        try:
            name = (self.person_dir(person_id) / "current").read_text().strip()
        except OSError:
            return None
        return name or None

    def current(self, person_id: str) -> AdapterVersion | None:
        name = self.current_name(person_id)
        if name is None:
            return None
        for v in self.versions(person_id):
            if v.version == name:
                return v
        return None

    def is_stale(self, person_id: str) -> bool:
        return (self.person_dir(person_id) / "stale").exists()

    def serving_path(self, person_id: str) -> Path | None:
        """The directory replies should use now, or None for the base model."""
        if self.is_stale(person_id):
            return None
        name = self.current_name(person_id)
        if name is None:
            return None
        path = self.person_dir(person_id) / "versions" / name
        return path if (path / WEIGHTS).exists() else None

    def new_version_dir(self, person_id: str) -> tuple[str, Path]:
        """A fresh hidden directory to write a version into; `commit_version` publishes it."""
        base = self.person_dir(person_id) / "versions"
        base.mkdir(parents=True, exist_ok=True)
        existing = [
            int(p.name[1:]) for p in base.iterdir() if p.name.startswith("v") and p.name[1:].isdigit()
        ]
        number = max(existing, default=0) + 1
        name = f"v{number:04d}"
        tmp = base / f".{name}.{os.getpid()}.{threading.get_ident()}"
        tmp.mkdir()
        return name, tmp

    def commit_version(self, person_id: str, name: str, tmp: Path, meta: dict[str, Any]) -> AdapterVersion:
        """Write meta and rename the finished directory into place (not yet current)."""
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        final = tmp.parent / name
        os.replace(tmp, final)
        return AdapterVersion(name, final, meta)

    def set_current(self, person_id: str, name: str | None) -> None:
        """Atomically switch the version replies use (None: back to the base model)."""
        folder = self.person_dir(person_id)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".current.{os.getpid()}.{threading.get_ident()}"
        tmp.write_text(name or "")
        os.replace(tmp, folder / "current")
        (folder / "stale").unlink(missing_ok=True)

    def update_meta(self, version: AdapterVersion, **changes: Any) -> None:
        meta = {**version.meta, **changes}
        tmp = version.path / f".{META}.tmp"
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
        os.replace(tmp, version.path / META)
        version.meta = meta

    def mark_stale(self, person_id: str, reason: str) -> None:
        """The person forgot data an adapter may have learned: stop serving it until retrained."""
        folder = self.person_dir(person_id)
        if not folder.exists():
            return
        (folder / "stale").write_text(json.dumps({"reason": reason, "at": time.time()}))
        log.info("adapter.stale", person=person_key(str(person_id)))

    def drop_person(self, person_id: str) -> None:
        """Delete every adapter of a person (forget_me)."""
        shutil.rmtree(self.person_dir(person_id), ignore_errors=True)

    @contextmanager
    def training_lock(self, person_id: str, *, wait: bool = False) -> Iterator[bool]:
        """An exclusive per-person lock across processes; yields False if another refresh holds it."""
        folder = self.person_dir(person_id)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".train.lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


# --- batched LoRA serving -------------------------------------------------------------------


class _RowContext:
    """Which slot each batch row uses in the current forward (None: no adapters at all)."""

    def __init__(self) -> None:
        self.index: Any = None
        self.single: int | None = None
        self.rank = 0  # the highest rank among the rows' adapters: columns past it are zero
        # bumped when the rows' slots or a slot's weights change: wrapped layers re-gather then
        self.version = 0


class BatchedLoRALinear(nn.Module):
    """Wraps a Linear: y = W x + B[slot] (A[slot] x), each row with its own slot, batched."""

    def __init__(self, base: nn.Linear, ctx: _RowContext, slots: int, rank: int) -> None:
        super().__init__()
        self.base = base
        self.ctx = ctx
        w = base.weight
        # On a CPU the LoRA math runs in float32 whatever the base's dtype: its matrices are tiny
        # (rank columns), and bf16 batched matmuls that small cost 5-10x their fp32 time there.
        dtype = torch.float32 if w.device.type == "cpu" else w.dtype
        # slot 0 stays zero: the base model, for rows without an adapter
        self.register_buffer("lora_a", torch.zeros(slots, rank, w.shape[1], dtype=dtype, device=w.device))
        self.register_buffer("lora_b", torch.zeros(slots, w.shape[0], rank, dtype=dtype, device=w.device))
        self._gathered: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        delta = self.lora_delta(x)
        return y if delta is None else y + delta

    def lora_delta(self, x: torch.Tensor) -> torch.Tensor | None:
        """Each row's B[slot] (A[slot] x) in x's dtype, or None when no row has an adapter.

        Separate from `forward` so the lean decode step (core/llm/decode.py), which runs fused
        q|k|v matmuls, adds the same per-row deltas.
        """
        index = self.ctx.index
        if index is None or x.dim() != 3 or x.shape[0] != index.shape[0]:
            return None
        dtype = x.dtype
        x = x.to(self.lora_a.dtype)
        if self.ctx.single is not None:  # every row uses the same adapter: plain matmuls
            s, r = self.ctx.single, self.ctx.rank
            return ((x @ self.lora_a[s, :r].transpose(0, 1)) @ self.lora_b[s, :, :r].transpose(0, 1)).to(
                dtype
            )
        if self._gathered is None or self._gathered[0] != self.ctx.version:
            # gather each row's A and B once per batch composition, not once per token
            r = self.ctx.rank
            a = self.lora_a.index_select(0, index)[:, :r].transpose(1, 2).contiguous()  # (batch, in, r)
            b = self.lora_b.index_select(0, index)[:, :, :r].transpose(1, 2).contiguous()  # (batch, r, out)
            self._gathered = (self.ctx.version, a, b)
        _, a, b = self._gathered
        return torch.bmm(torch.bmm(x, a), b).to(dtype)


def plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` without serving wrappers (for training with PEFT in-process)."""
    clone = copy.deepcopy(model)
    for name, module in list(clone.named_modules()):
        if isinstance(module, BatchedLoRALinear):
            parent_name, _, leaf = name.rpartition(".")
            setattr(clone.get_submodule(parent_name), leaf, module.base)
    return clone


def read_adapter(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """PEFT's adapter config and tensors from a version directory."""
    from safetensors.torch import load_file

    try:
        config = json.loads((path / CONFIG).read_text())
        tensors = load_file(str(path / WEIGHTS))
    except (OSError, ValueError) as exc:
        raise AdapterError(f"Adapter files in {path} cannot be read ({exc}); retrain it.") from exc
    return config, tensors


def _module_name(key: str) -> tuple[str, str] | None:
    """'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' -> ('model.layers.0.self_attn.q_proj', 'A')."""
    for part, which in ((".lora_A.", "A"), (".lora_B.", "B")):
        if part in key:
            name = key.split(part)[0]
            for prefix in ("base_model.model.",):
                if name.startswith(prefix):
                    name = name[len(prefix) :]
            return name, which
    return None


class AdapterRegistry:
    """An LRU of adapters resident in the model's LoRA slots, loaded from disk on demand.

    All methods except `register`/`stats` are called from the engine's generation thread, so a
    slot is never rewritten while a forward uses it; slots of running rows are pinned.
    """

    def __init__(
        self,
        model: Any,
        settings: Settings,
        *,
        resolver: Callable[[str], Path | None] | None = None,
        max_loaded: int | None = None,
        max_bytes: int | None = None,
        rank: int | None = None,
        targets: tuple[str, ...] = DEFAULT_TARGETS,
    ) -> None:
        self.model = model
        self.store = AdapterStore(settings)
        self.resolver = resolver or self.store.serving_path
        self.max_loaded = max_loaded or getattr(settings, "adapter_cache_count", 16)
        self.max_bytes = max_bytes or getattr(settings, "adapter_cache_bytes", 256 * 2**20)
        self.rank = rank or getattr(settings, "adapter_max_rank", 16)
        self.targets = targets
        self._named: dict[str, Path] = {}
        self._ctx = _RowContext()
        self._modules: dict[str, Any] = {}
        self._lru: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._bytes: dict[int, int] = {}
        self._ranks: dict[int, int] = {}
        self._pins: dict[int, int] = {}
        self._free = list(range(self.max_loaded, 0, -1))
        self._last_rows: list[int] | None = None
        self.base = base_fingerprint(model)
        self.loads = 0
        self.load_seconds: list[float] = []

    # -- setup --

    def register(self, name: str, path: Path) -> None:
        """Serve the adapter in `path` under `name` (bench/tests; people resolve through the store)."""
        self._named[name] = Path(path)

    def _install(self) -> None:
        if self._modules:
            return
        for name, module in list(self.model.named_modules()):
            leaf = name.rsplit(".", 1)[-1]
            if leaf in self.targets and module.__class__.__name__ == "Linear":
                parent = self.model.get_submodule(name.rsplit(".", 1)[0])
                wrapped = BatchedLoRALinear(module, self._ctx, self.max_loaded + 1, self.rank)
                setattr(parent, leaf, wrapped)
                self._modules[name] = wrapped
        if not self._modules:
            raise AdapterError(f"The model has none of the LoRA target modules {self.targets}.")

    # -- per forward --

    @property
    def active(self) -> bool:
        """Whether the current rows use any adapter (set_rows decides)."""
        return self._ctx.index is not None

    def set_rows(self, slots: list[int]) -> None:
        import torch

        if not self._modules or all(s < 0 for s in slots):
            self._ctx.index, self._ctx.single, self._last_rows = None, None, None
            return
        mapped = [max(s, 0) for s in slots]
        if self._ctx.index is not None and self._last_rows == mapped:
            return  # same rows as the last step: keep the gathered weights
        self._last_rows = mapped
        self._ctx.version += 1
        self._ctx.single = mapped[0] if len(set(mapped)) == 1 else None
        self._ctx.rank = max((self._ranks.get(s, 0) for s in mapped), default=0) or 1
        device = next(iter(self._modules.values())).lora_a.device
        self._ctx.index = torch.tensor(mapped, dtype=torch.long, device=device)

    # -- the LRU --

    def acquire(self, name: str) -> int:
        """The slot for `name`'s current adapter, loading it if needed; -1 = use the base model."""
        path = self._named.get(name) or self.resolver(name)
        if path is None:
            return -1
        key = (name, str(path))
        slot = self._lru.get(key)
        if slot is None:
            try:
                slot = self._load(key, Path(path))
            except AdapterError as exc:
                log.warning("adapter.unusable", error=str(exc))
                return -1
            if slot < 0:
                return -1
        else:
            ADAPTER_CACHE.labels(result="hit").inc()
        self._lru.move_to_end(key)
        self._pins[slot] = self._pins.get(slot, 0) + 1
        return slot

    def slot_key(self, slot: int) -> str:
        """Which adapter version a slot holds (what a cached prompt prefix was computed under)."""
        for (name, path), held in self._lru.items():
            if held == slot:
                return f"{name}@{path}"
        return f"slot{slot}"

    def release(self, slot: int) -> None:
        if slot in self._pins:
            self._pins[slot] -= 1
            if self._pins[slot] <= 0:
                del self._pins[slot]

    def _evict_one(self) -> bool:
        for key, slot in self._lru.items():
            if slot not in self._pins:
                del self._lru[key]
                self._bytes.pop(slot, None)
                self._ranks.pop(slot, None)
                self._free.append(slot)
                return True
        return False

    def _load(self, key: tuple[str, str], path: Path) -> int:
        # slots are always created and written in inference mode, whichever thread loads them
        with torch.inference_mode():
            return self._load_inner(key, path)

    def _load_inner(self, key: tuple[str, str], path: Path) -> int:
        start = time.perf_counter()
        config, tensors = read_adapter(path)
        self._check_base(path)
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        while self._lru and (not self._free or sum(self._bytes.values()) + size > self.max_bytes):
            if not self._evict_one():
                break
        if not self._free:
            log.warning("adapter.no_free_slot", loaded=len(self._lru))
            return -1
        self._install()
        rank = int(config.get("r", 8))
        if rank > self.rank:
            raise AdapterError(
                f"Adapter rank {rank} is above the serving limit {self.rank} (CONFIDANTE_ADAPTER_MAX_RANK)."
            )
        alpha = float(config.get("lora_alpha", rank))
        scale = alpha / (rank**0.5) if config.get("use_rslora") else alpha / rank
        pairs: dict[str, dict[str, Any]] = {}
        for k, t in tensors.items():
            found = _module_name(k)
            if found:
                pairs.setdefault(found[0], {})[found[1]] = t
        unknown = set(pairs) - set(self._modules)
        if unknown:
            raise AdapterError(
                f"Adapter {path} targets modules this server does not wrap: {sorted(unknown)[:3]}"
            )
        for name, pair in pairs.items():
            module = self._modules[name]
            want_a, want_b = module.lora_a.shape[2], module.lora_b.shape[1]
            if any(
                (w == "A" and t.shape[1] != want_a) or (w == "B" and t.shape[0] != want_b)
                for w, t in pair.items()
            ):
                raise AdapterError(
                    f"Adapter {path} does not fit the served base model ({name} has other shapes): it "
                    "was trained for another base. A refresh trains one for this model."
                )
        slot = self._free.pop()
        for name, module in self._modules.items():
            a_buf, b_buf = module.lora_a[slot], module.lora_b[slot]
            a_buf.zero_()
            b_buf.zero_()
            pair = pairs.get(name)
            if pair and "A" in pair and "B" in pair:
                a_buf[:rank].copy_(pair["A"].to(a_buf.dtype))
                b_buf[:, :rank].copy_((pair["B"].float() * scale).to(b_buf.dtype))
        self._lru[key] = slot
        self._bytes[slot] = size
        self._ranks[slot] = rank
        self._ctx.version += 1  # a slot's weights changed under any gathered copy
        self._last_rows = None
        self.loads += 1
        ADAPTER_CACHE.labels(result="load").inc()
        self.load_seconds.append(time.perf_counter() - start)
        return slot

    def _check_base(self, path: Path) -> None:
        """Refuse an adapter trained on other base weights (its meta.json names them)."""
        try:
            meta = json.loads((path / META).read_text())
        except (OSError, ValueError):
            return  # bench/test adapters without meta: the shape check still applies
        trained_on = meta.get("base_fingerprint")
        if trained_on and trained_on != self.base:
            raise AdapterError(
                f"Adapter {path} was trained for base model {meta.get('base_model', trained_on)!r}, "
                "not the one served now, so it is not used (the base model answers). The next "
                "adapter refresh trains one for this model."
            )

    def stats(self) -> dict[str, Any]:
        return {"loaded": len(self._lru), "bytes": sum(self._bytes.values()), "loads": self.loads}
