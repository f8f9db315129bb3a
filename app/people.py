"""What every `confidante` subcommand that works on one person's data needs: the store, and the
person an argument names. Shared by app/cli.py and app/adapter_cli.py (neither imports the other's
private helpers)."""

from __future__ import annotations

import typer
from rich.console import Console

from core.config import Settings
from core.memory.store import Store, open_store

err = Console(stderr=True)


def open_cli_store(settings: Settings) -> Store:
    """The store as a one-shot command sees it: no journal (a running chat process owns that)."""
    return open_store(settings)


def resolve_person(store: Store, person: str) -> str:
    """A person id as given, or the person a console name belongs to; exits 1 when neither."""
    if store.person(person) is not None:
        return person
    found = store.person_for("console", person)
    if found is None:
        err.print(f"[red]No person called {person!r}.[/red] Chat first: confidante chat --person {person}")
        raise typer.Exit(1)
    return found
