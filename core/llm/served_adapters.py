"""Each person's adapter on a serving engine: published where the server reads it, loaded there,
named per request, and withdrawn on rollback or forgetting.

An adapter's served name is `<person key>-<version>-<weights digest>`: the person key is a hash
of the person id (core/llm/adapters.py), so a name belongs to exactly one person and says nothing
about them, and new weights always get a new name, never a reused one. A request for a person
whose adapter is not on the server is answered by the base model (or the all-zero adapter, which
is the same), never by another name.

- vLLM (`generation_adapters = "vllm"`): the version's PEFT files are copied into the publish
  directory (shared storage the server reads) and loaded with `POST /v1/load_lora_adapter` (the
  server runs with `--enable-lora` and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True); the request's
  `model` is the adapter's name; older names of the person are unloaded.
- llama.cpp's server (`"llamacpp"`): it loads adapters only at its start (`--lora file.gguf`), and a
  request picks one by id in its `lora` field; `GET /lora-adapters` maps ids to files. Publishing
  writes the GGUF file; the server serves it after its next start, the base model until then.
- `"none"` (Ollama and other servers without per-request adapters): the base model for everyone.

Workers publish after a promotion and withdraw after a rollback or forgetting (workers/training.py);
the chat process loads a published adapter itself when the server lost it (a restart).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import httpx
import structlog

from core.config import Settings
from core.llm.adapters import CONFIG, WEIGHTS, AdapterError, AdapterStore, person_key

log = structlog.get_logger(__name__)


def server_root(url: str) -> str:
    """`http://host:8000/v1/` -> `http://host:8000`: the OpenAI routes are under /v1, vLLM's and
    llama.cpp's own (tokenize, lora-adapters) are not."""
    root = url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def auth_headers(settings: Settings) -> dict[str, str]:
    key = settings.generation_api_key
    return {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}


# Named in every request that has no adapter of its own (see ServedAdapters.zero): vLLM's CPU build
# (0.32.0) indexes its LoRA slots with -1 for such rows in a batch that mixes in adapters, which
# in torch is the LAST slot, so a person without an adapter was answered with whoever's adapter
# sat there (measured: garbage replies for base rows next to two adapters). An all-zero adapter
# adds exactly nothing and keeps every row's index valid.
ZERO_ADAPTER = "confidante-zero"

_digests: dict[tuple[str, int, int], str] = {}


def served_name(person_id: str, version_dir: Path) -> str:
    """`<person key>-<version>-<digest of the weights>`: a retrained v0001 after a forget_me, or a
    data dir restored from a backup, never reuses a name a server may still hold other weights
    under."""
    weights = version_dir / WEIGHTS
    stat = weights.stat()
    key = (str(weights), stat.st_mtime_ns, stat.st_size)
    if key not in _digests:
        _digests[key] = hashlib.sha256(weights.read_bytes()).hexdigest()[:10]
    return f"{person_key(person_id)}-{version_dir.name}-{_digests[key]}"


def gguf_file(name: str) -> str:
    return f"{name}.gguf"


class ServedAdapters:
    """Publishing and the server's adapter routes, for the workers (synchronous)."""

    def __init__(self, settings: Settings, *, client: httpx.Client | None = None) -> None:
        self.settings = settings
        self.mode = settings.generation_adapters if settings.remote_generation else "none"
        self.store = AdapterStore(settings)
        self.root = Path(settings.served_adapter_dir)
        self._client = client

    # -- names and paths --

    def current_name(self, person_id: str) -> str | None:
        """The served name of the adapter this person's replies should use now (None: base)."""
        path = self.store.serving_path(person_id)
        try:
            return None if path is None else served_name(person_id, path)
        except OSError:  # removed a moment ago (rollback, forgetting): the base model
            return None

    def published_path(self, name: str) -> Path:
        return self.root / name

    def server_path(self, name: str) -> str:
        """The published adapter as the server sees it (its mount may differ from ours)."""
        base = self.settings.generation_adapter_server_dir
        return str(Path(base) / name) if base else str(self.published_path(name))

    def is_published(self, name: str) -> bool:
        return (self.published_path(name) / WEIGHTS).exists()

    # -- publish / withdraw --

    def publish(self, person_id: str) -> str | None:
        """Copy the person's current adapter where the server reads it and load it there; drop
        the person's other names. Returns the served name (None: base model)."""
        if self.mode == "none":
            return None
        name = self.current_name(person_id)
        if name is None:
            self.withdraw(person_id)
            return None
        source = self.store.serving_path(person_id)
        if source is not None and not self.is_published(name):
            self._copy(source, name)
        if self.mode == "vllm":
            self.zero()
            self.load(name)
        self.withdraw(person_id, keep=name)
        return name

    def withdraw(self, person_id: str, *, keep: str | None = None) -> list[str]:
        """Unload and delete every published name of this person except `keep` (rollback,
        forgetting, erasure: weights trained on forgotten data must leave the server too)."""
        if not self.root.exists():
            return []
        prefix = person_key(person_id) + "-"
        gone = []
        for path in self.root.iterdir():
            name = path.name.removesuffix(".gguf")
            if not name.startswith(prefix) or name == keep or path.name.startswith("."):
                continue
            if self.mode == "vllm":
                self.unload(name)
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            gone.append(name)
        if gone:
            log.info("adapter.withdrawn", person=prefix[:-1], names=len(gone))
        return gone

    def zero(self) -> bool:
        """Publish (once) and load the all-zero adapter that requests without an adapter name
        (see ZERO_ADAPTER). It is made from any published adapter, with every matrix zeroed, so
        it fits the served model without reading its config; False while none is published."""
        if self.mode != "vllm" or not self.settings.generation_zero_adapter:
            return False
        if not self.is_published(ZERO_ADAPTER):
            template = next(
                (p for p in sorted(self.root.glob("*/" + WEIGHTS)) if p.parent.name != ZERO_ADAPTER), None
            ) if self.root.exists() else None  # fmt: skip
            if template is None:
                return False
            self._write_zero(template.parent)
        return self.load(ZERO_ADAPTER)

    def _write_zero(self, template: Path) -> None:
        import torch
        from safetensors.torch import load_file, save_file

        tmp = Path(tempfile.mkdtemp(prefix=f".{ZERO_ADAPTER}.", dir=self.root))
        tensors = {k: torch.zeros_like(v) for k, v in load_file(str(template / WEIGHTS)).items()}
        save_file(tensors, str(tmp / WEIGHTS))
        shutil.copy2(template / CONFIG, tmp / CONFIG)
        try:
            os.replace(tmp, self.published_path(ZERO_ADAPTER))
        except OSError:  # another process published it first
            shutil.rmtree(tmp, ignore_errors=True)

    def _copy(self, source: Path, name: str) -> None:
        """Written to a hidden sibling and renamed, so the server never reads half an adapter."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.root))
        try:
            for file in (WEIGHTS, CONFIG):
                shutil.copy2(source / file, tmp / file)
            if self.mode == "llamacpp":
                from core.llm.lora_gguf import peft_to_gguf

                model_config = Path(self.settings.generation_tokenizer or "") / "config.json"
                if not model_config.exists():
                    raise AdapterError(
                        "llama.cpp adapters need the served model's config.json: set "
                        "CONFIDANTE_GENERATION_TOKENIZER to the model's directory."
                    )
                part = self.root / f".{gguf_file(name)}.tmp"
                peft_to_gguf(source, part, model_config)
                os.replace(part, self.root / gguf_file(name))
            os.replace(tmp, self.published_path(name))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    # -- the server's routes (vLLM) --

    def _post(self, route: str, body: dict[str, Any]) -> httpx.Response:
        url = server_root(self.settings.generation_url or "") + route
        client = self._client or httpx.Client(timeout=httpx.Timeout(30.0, connect=3.0))
        try:
            return client.post(url, json=body, headers=auth_headers(self.settings))
        finally:
            if self._client is None:
                client.close()

    def load(self, name: str) -> bool:
        """Load a published adapter on the server; False (logged) when it could not be."""
        try:
            response = self._post(
                "/v1/load_lora_adapter", {"lora_name": name, "lora_path": self.server_path(name)}
            )
        except httpx.HTTPError as exc:
            log.warning("adapter.load_failed", name=name, error=type(exc).__name__)
            return False
        if response.status_code == 200 or "already been loaded" in response.text:
            return True
        log.warning("adapter.load_failed", name=name, status=response.status_code, error=response.text[:200])
        return False

    def unload(self, name: str) -> None:
        try:
            self._post("/v1/unload_lora_adapter", {"lora_name": name})
        except httpx.HTTPError as exc:  # the server is down: it lost its adapters anyway
            log.warning("adapter.unload_failed", name=name, error=type(exc).__name__)
