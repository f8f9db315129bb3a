"""Remote-generation fixtures: one real vLLM server per pytest session (launched at collection,
so it boots while other tests run), and a small fake OpenAI-compatible server for the retry and
error tests.

vLLM runs from its own venv (infra/vllm/setup.sh installs it on first use, ~2 min once).
CONFIDANTE_TEST_VLLM_URL points the tests at a server that is already running instead.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Iterator

import pytest

from infra.vllm.server import VLLMServer

# as many LoRA slots as one test batch uses (two people + the zero adapter): every slot is taken,
# so a row without a valid adapter index would be answered with someone else's (see
# core/llm/served_adapters.py, ZERO_ADAPTER) and the test would see it
MAX_LORAS = 3

_server: VLLMServer | None = None


@pytest.hookimpl(trylast=True)  # after `-m`/`-k` deselection: no server when no test needs one
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    global _server
    if os.environ.get("CONFIDANTE_TEST_VLLM_URL"):
        return
    if _server is None and any(item.get_closest_marker("vllm") for item in items):
        _server = VLLMServer(max_loras=MAX_LORAS)
        _server.launch()
        atexit.register(_server.stop)  # also when the session ends before the fixture ran


@pytest.fixture(scope="session")
def vllm_url() -> Iterator[str]:
    """The base URL of a real vLLM (CPU) server serving the bundled model with runtime LoRA."""
    if os.environ.get("CONFIDANTE_TEST_VLLM_URL"):
        yield os.environ["CONFIDANTE_TEST_VLLM_URL"].rstrip("/")
        return
    global _server
    server = _server or VLLMServer(max_loras=MAX_LORAS)
    if _server is None:
        server.launch()
    waited = time.monotonic()
    server.wait_ready()
    print(
        f"\nvLLM: answered {server.start_seconds:.1f}s after launch "
        f"(this session waited {time.monotonic() - waited:.1f}s)"
    )
    yield server.url
    server.stop()
    _server = None
