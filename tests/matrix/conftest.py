"""Matrix test fixtures: one real Synapse per pytest session, nio clients as the people.

Synapse runs from its own venv (infra/synapse/setup.sh installs it on first use, ~35 s once).
Each test registers fresh users, so tests share the server without seeing each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from matrix_helpers import Homeserver, Person, unique

from bots.matrix import MatrixBot


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The session's homeserver; started on first use, stopped at the end."""
    hs = Homeserver(tmp_path_factory.mktemp("synapse"))
    hs.start()
    print(f"\nSynapse answered {hs.start_seconds:.2f}s after launch on {hs.url}")
    yield hs
    hs.stop()


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
