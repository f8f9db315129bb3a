"""A throwaway vLLM server on 127.0.0.1 (the CPU build, from .venv-vllm) for the remote-generation
tests and bench/remote_bench.py.

It serves a local model directory (the bundled model's converted copy) with runtime LoRA loading
on, as a deployment would: `--enable-lora` and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True. This module
only drives the subprocess; infra/vllm/setup.sh installs it (once).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "infra" / "vllm" / "setup.sh"
VENV = Path(os.environ.get("VLLM_VENV", ROOT / ".venv-vllm"))
SERVED_NAME = "base"
MAX_LORA_RANK = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VLLMServer:
    """`launch()` returns at once (install, model conversion and start run in a thread, so the
    server boots while other tests run); `wait_ready()` blocks until it answers."""

    def __init__(self, model_dir: Path | None = None, *, max_loras: int = 8, dtype: str = "float32") -> None:
        self.model_dir = model_dir
        self.max_loras = max_loras
        self.dtype = dtype
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix="confidante-vllm-", suffix=".log")[1])
        self.start_seconds = 0.0
        self._launched = 0.0
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def launch(self) -> None:
        self._launched = time.monotonic()
        self._thread = threading.Thread(target=self._start, name="vllm-launch", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            subprocess.run(["bash", str(SETUP)], check=True)
            if self.model_dir is None:
                self.model_dir = bundled_model_dir()
            env = {
                **os.environ,
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
                "VLLM_TARGET_DEVICE": "cpu",
                # KV cache in GiB of RAM: the tests and the bench need a few thousand tokens
                "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
                "VLLM_NO_USAGE_STATS": "1",
                "HF_HUB_OFFLINE": "1",
            }
            args = [
                str(VENV / "bin" / "vllm"),
                "serve",
                str(self.model_dir),
                "--host", "127.0.0.1",
                "--port", str(self.port),
                "--served-model-name", SERVED_NAME,
                "--enable-lora",
                "--max-lora-rank", str(MAX_LORA_RANK),
                "--max-loras", str(self.max_loras),
                "--dtype", self.dtype,
                # on a CPU: the share of RAM for the KV cache (VLLM_CPU_KVCACHE_SPACE sets it here)
                "--gpu-memory-utilization", "0.3",
                "--max-model-len", "2048",
                # the model's own sampling defaults off: a request's settings are the only ones
                "--generation-config", "vllm",
            ]  # fmt: skip
            with open(self.log, "ab") as out:
                # its own process group: stopping it stops its engine and worker processes too
                self.proc = subprocess.Popen(
                    args, stdout=out, stderr=out, env=env, cwd=ROOT, start_new_session=True
                )
        except BaseException as exc:  # reported by wait_ready
            self._error = exc

    def wait_ready(self, timeout: float = 900.0) -> None:
        """Wait for /health (the first run also installs vLLM, ~2 min)."""
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(timeout)
        if self._error is not None:
            raise RuntimeError(f"vLLM could not be started: {self._error}") from self._error
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.proc.returncode}; its log:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2.0).status_code == 200:
                    self.start_seconds = time.monotonic() - self._launched
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"vLLM did not answer within {timeout:.0f} s; its log:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            group = os.getpgid(self.proc.pid)  # the group this process leads (start_new_session)
            os.killpg(group, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(group, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        self.log.unlink(missing_ok=True)


def bundled_model_dir() -> Path:
    """The bundled model's converted copy (the same cache the tests and `make run` use)."""
    from core.config import Settings
    from core.llm.model import _resolve_source

    settings = Settings(model_cache_dir=ROOT / "data" / "models", _env_file=None)
    source, _ = _resolve_source(settings)  # converts once (~30 s) when missing
    return Path(source)
