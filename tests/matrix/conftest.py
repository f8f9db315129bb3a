"""Matrix test fixtures: one real Synapse per pytest session, nio clients as the people.

Synapse runs from its own venv (infra/synapse/setup.sh installs it on first use, ~35 s once).
Each test registers fresh users, so tests share the server without seeing each other.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bots.matrix import MatrixBot
from tests.matrix.matrix_helpers import Homeserver, Person, remove, unique

_server: Homeserver | None = None


@pytest.hookimpl(trylast=True)  # after `-m`/`-k` deselection: no server when no test needs one
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Launch Synapse as soon as we know a test needs it, so it boots while other tests run."""
    global _server
    if _server is None and any(item.get_closest_marker("synapse") for item in items):
        import atexit
        import tempfile

        _server = Homeserver(Path(tempfile.mkdtemp(prefix="confidante-synapse-")))
        _server.launch()
        atexit.register(_server.stop)  # also when the session ends before the fixture ran


@pytest.fixture(scope="session")
def synapse() -> Iterator[Any]:
    """The session's homeserver, stopped at the end."""
    global _server
    hs = _server or Homeserver(Path(__import__("tempfile").mkdtemp(prefix="confidante-synapse-")))
    waited = time.monotonic()
    hs.wait_ready()
    print(
        f"\nSynapse: answered {hs.start_seconds:.2f}s after launch (this session waited {time.monotonic() - waited:.2f}s)"
    )
    yield hs
    hs.stop()
    remove(hs.workdir)
    _server = None


@pytest.fixture
async def bots() -> AsyncIterator[list[MatrixBot]]:
    """Bots started in a test are stopped even when it fails."""
    started: list[MatrixBot] = []
    yield started
    for bot in started:
        if not bot._stopping:
            await bot.stop()


@pytest.fixture
async def people(synapse: Any, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    made: list[Person] = []

    async def make(name: str, encrypted: bool = False) -> Person:
        account = synapse.register(unique(name))
        person = Person(synapse, account, tmp_path / f"store-{account.user_id}" if encrypted else None)
        await person.setup()
        made.append(person)
        return person

    yield make
    for p in made:
        await p.client.close()


@pytest.fixture
def real_assistant(tiny_model, embedder, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """The real Assistant (LanceDB under the data dir, tiny random Llama), built like `confidante run`
    builds it; call it again with the same settings to play a process restart."""
    from core.assistant import build_assistant
    from core.llm.engine import Engine
    from tests.helpers import RecordingEngine

    engines: list[Any] = []
    assistants: list[Any] = []

    def make(settings: Any) -> Any:
        for old in assistants:
            old.close()  # the previous process has exited
        engine = Engine(tiny_model, settings)
        engines.append(engine)
        # the session's loaded embedder, handed in (no module patching)
        assistants.append(
            build_assistant(settings, engine=RecordingEngine(engine, continues=True), embedder=embedder)
        )
        return assistants[-1]

    yield make
    for assistant in assistants:
        assistant.close()
    for engine in engines:
        engine.close()
