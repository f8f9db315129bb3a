"""`confidante import`: a progress bar around core.memory.importers, and a plain summary."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from core.memory.importers import FORMATS, ImportFailed, import_history
from core.memory.records import Person

err = Console(stderr=True)
SHOW_BAD = 20


def run_import(
    store, file: Path, person: str, *, me, fmt, visibility: str, read_media: bool = False, settings=None
) -> str | None:
    """Import with a progress bar; returns the person id when anything new was stored."""
    if fmt is not None and fmt not in FORMATS:
        err.print(f"[red]Unknown format {fmt!r}.[/red] Use one of: {', '.join(FORMATS)}.")
        raise typer.Exit(2)
    if visibility not in ("private", "chat"):
        err.print("[red]--visibility is private or chat.[/red]")
        raise typer.Exit(2)
    person_id = store.person_for("console", person) or person
    if store.person(person_id) is None:
        store.save_person(Person(person_id=person_id, display_name=person))
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("importing", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        reader = None
        if read_media:  # opt-in: transcribing a whole archive takes a while; the bar counts them
            from core.media.reader import reader_for_import

            inner = reader_for_import(settings)
            count = [0]

            def reader(kind: str, path: Path) -> str | None:
                count[0] += 1
                bar.update(task, description=f"importing, reading voice note/photo {count[0]}")
                return inner(kind, path)

        try:
            report = import_history(
                store,
                file,
                person_id,
                me=me,
                fmt=fmt,
                visibility=visibility,
                progress=progress,
                read_media=reader,
            )
        except ImportFailed as exc:
            err.print(f"[red]Import failed:[/red] {exc}")
            raise typer.Exit(1) from exc
    for bad in report.bad[:SHOW_BAD]:
        err.print(f"[yellow]skipped {bad.where}:[/yellow] {bad.reason}")
    if len(report.bad) > SHOW_BAD:
        err.print(f"[yellow]... and {len(report.bad) - SHOW_BAD} more skipped records[/yellow]")
    rate = report.read / report.seconds if report.seconds else 0.0
    err.print(
        f"{report.format}: {report.read:,} messages read in {len(report.chats)} chats, "
        f"{report.imported:,} imported ({report.mine:,} by {person_id}), "
        f"{report.already_there:,} already there, {report.skipped_empty:,} without text, "
        f"{len(report.bad):,} bad; {report.seconds:.1f} s ({rate:,.0f} messages/s)"
    )
    if report.media:
        how = "transcribed or read" if read_media else "kept as placeholders (--read-media reads them)"
        err.print(f"{report.media:,} voice notes and photos: {report.media_read:,} {how}")
    return person_id if report.imported else None
