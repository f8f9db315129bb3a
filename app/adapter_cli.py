"""`confidante adapter list|train|rollback --person P`: see, retrain and roll back a person's adapter.

Mount in app/cli.py with `app.add_typer(adapter_app, name="adapter")`.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app import people
from core.config import get_settings

adapter_app = typer.Typer(help="Per-person adapters: list versions, train one now, roll back.")
out = Console(highlight=False)
err = Console(stderr=True)

PersonOpt = Annotated[str, typer.Option("--person", "-p", help="Person id or console name")]


def _person(person: str) -> tuple[object, str]:
    store = people.open_cli_store(get_settings())
    return store, people.resolve_person(store, person)


def _fmt(value: object, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


@adapter_app.command("list")
def adapter_list(person: PersonOpt) -> None:
    """Versions with date, status, training size and the gate's scores."""
    from workers.training import list_versions

    _, person_id = _person(person)
    rows = list_versions(person_id, get_settings())
    if not rows:
        out.print("No adapter yet: replies use the base model. Train one with `confidante adapter train`.")
        return
    table = Table(
        title=f"Adapters of {person}" + ("  [yellow](stale: retrain pending)[/]" if rows[0]["stale"] else "")
    )
    for col in (
        "version",
        "created",
        "status",
        "train pairs",
        "held-out NLL before -> after",
        "general ppl change",
        "note",
    ):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["version"],
            r["created_at"],
            r["status"],
            str(r["train_size"]),
            f"{_fmt(r['heldout_nll_before'])} -> {_fmt(r['heldout_nll_after'])}",
            _fmt(r["general_ppl_change"], "+.1%"),
            r["reason"],
        )
    out.print(table)


@adapter_app.command("train")
def adapter_train(person: PersonOpt) -> None:
    """Train a new version now (in this process), gate it and promote it if it passes."""
    from workers.training import refresh_adapter

    store, person_id = _person(person)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    ) as bar:
        task = bar.add_task("loading the model", total=None)

        def progress(stage: str, step: int, total: int) -> None:
            bar.update(task, description=stage, completed=step, total=total)

        result = refresh_adapter(person_id, store, get_settings(), force=True, progress=progress)
    colour = {"promoted": "green", "rejected": "yellow"}.get(result.status, "white")
    out.print(f"[{colour}]{result.status}[/] {result.version or ''} {result.reason}".strip())
    if result.scores:
        s = result.scores
        out.print(
            f"held-out NLL {s['heldout_nll_before']:.3f} -> {s['heldout_nll_after']:.3f}, "
            f"general perplexity {s['general_ppl_change']:+.1%}, {result.train_size} pairs, {result.seconds:.0f} s"
        )
    if result.status == "busy":
        raise typer.Exit(1)


@adapter_app.command("rollback")
def adapter_rollback(
    person: PersonOpt,
    to: Annotated[str | None, typer.Option("--to", help="A version from `adapter list`")] = None,
) -> None:
    """Serve the previous accepted version again (or the one given with --to)."""
    from workers.training import rollback

    _, person_id = _person(person)
    try:
        version = rollback(person_id, get_settings(), to)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    out.print(f"Now serving {version.version} for {person}.")
