"""The `confidante` command, and the composition root: the one place that wires channels
(bots/), the core and the workers together."""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import sys
import uuid
from pathlib import Path
from typing import Annotated

import structlog
import typer
from rich.console import Console
from rich.table import Table

from app.adapter_cli import adapter_app
from app.people import open_cli_store, resolve_person
from bots.channel import configured
from bots.settings import ChannelSettings, get_channel_settings
from core.config import Settings

app = typer.Typer(help="Confidante: a personal assistant that remembers you.", no_args_is_help=True)
memory_app = typer.Typer(help="See, export and forget what is remembered about a person.")
app.add_typer(memory_app, name="memory")
app.add_typer(adapter_app, name="adapter")

err = Console(stderr=True)
out = Console(highlight=False)

# the embedded worker's warm shutdown finishes its task; past this it is killed (the task re-runs)
WORKER_STOP_SECONDS = 5.0


def get_settings() -> ChannelSettings:
    """The settings `confidante` commands run with: core's, and each channel's own section."""
    return get_channel_settings()


PersonOpt = Annotated[str, typer.Option("--person", "-p", help="Person id or console name")]


class _Stderr:
    """Whatever sys.stderr is at write time (tests swap it; a bound file may be closed)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(settings: Settings) -> None:
    """Logs go to stderr, with secrets scrubbed and message text only at DEBUG when asked for."""
    from core import logsafety

    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(message)s")
    logsafety.install_stdlib_filter(settings)
    as_json = settings.log_json == "true" or (settings.log_json == "auto" and not sys.stderr.isatty())
    structlog.configure(
        processors=logsafety.processors(settings, logsafety.json_renderer() if as_json else None),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),
    )
    for noisy in (
        "httpx",
        "httpcore",
        "sentence_transformers",
        "transformers",
        "nio",
        "telegram",
        "slack_bolt",
    ):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _assistant(settings: Settings, *, jobs=None):
    from core.assistant import build_assistant
    from core.llm.model import ModelLoadError

    try:
        return build_assistant(settings, jobs=jobs)
    except ModelLoadError as exc:
        err.print(f"[red]Could not load the model:[/red] {exc}")
        raise typer.Exit(2) from exc


@app.command()
def chat(person: Annotated[str, typer.Option("--person", "-p", help="Who is talking")] = "") -> None:
    """Chat in this terminal (one line, one message; /exit quits)."""
    from bots.console import chat as console_chat

    settings = get_settings()
    configure_logging(settings)
    jobs = _jobs(settings)
    assistant = None
    try:
        assistant = _assistant(settings, jobs=jobs)
        _attach(jobs, assistant)
        asyncio.run(console_chat(assistant, person or getpass.getuser()))
    finally:
        if assistant is not None:
            assistant.close()  # staged turns reach LanceDB (and their jobs) before the jobs stop
        _close(jobs)


@app.command()
def run() -> None:
    """Start every configured platform in one process; with none configured, chat here."""
    from app.run import run_platforms

    settings = get_settings()
    configure_logging(settings)
    jobs = _jobs(settings)
    assistant = None
    try:
        assistant = _assistant(settings, jobs=jobs)
        _attach(jobs, assistant)
        asyncio.run(run_platforms(assistant, settings, person=getpass.getuser()))
    finally:
        if assistant is not None:
            assistant.close()  # staged turns reach LanceDB (and their jobs) before the jobs stop
        if configured(settings):
            # a service stops within its grace period: queued work waits on disk for the next start
            _close(jobs, drain=False, worker_timeout=WORKER_STOP_SECONDS)
        else:
            _close(jobs)  # the terminal session ended: finish its background work first


@app.command()
def worker(
    beat: Annotated[
        bool, typer.Option(help="Also run the periodic tasks (run it in one worker only)")
    ] = True,
    concurrency: Annotated[int, typer.Option(help="Tasks at once (1: one process)")] = 1,
    queues: Annotated[
        str,
        typer.Option(
            help="Comma-separated queues: confidante (consolidation, upkeep) and adapters "
            "(training; give it to a GPU machine)"
        ),
    ] = "confidante,adapters",
    metrics_port: Annotated[
        int, typer.Option(help="Serve this worker's task metrics on 127.0.0.1:PORT (0: off)")
    ] = 0,
) -> None:
    """Run a background worker for CONFIDANTE_BROKER_URL (memory consolidation, upkeep, adapters)."""
    settings = get_settings()
    if not settings.broker_url:
        err.print(
            "[red]CONFIDANTE_BROKER_URL is not set.[/red] `confidante run` starts its own embedded "
            "worker; set CONFIDANTE_BROKER_URL=redis://host:6379/0 to run workers separately."
        )
        raise typer.Exit(2)
    from workers.worker import ALL_QUEUES, run_worker

    chosen = tuple(q.strip() for q in queues.split(",") if q.strip())
    unknown = sorted(set(chosen) - set(ALL_QUEUES))
    if not chosen or unknown:
        err.print(f"[red]Unknown queue {', '.join(unknown) or '(none)'}.[/red] Use: {', '.join(ALL_QUEUES)}")
        raise typer.Exit(2)
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=settings.ops_host)
    run_worker(beat=beat, concurrency=concurrency, queues=chosen)


@app.command()
def prepare() -> None:
    """Convert the bundled model and export the embedder now, so the first start is quick (an
    image build runs this with CONFIDANTE_MODEL_CACHE_DIR inside the image)."""
    from core.memory.embed import default_embedder

    settings = get_settings()
    configure_logging(settings)
    _load_model(settings)
    from core.llm.blockq import build_kernel

    build_kernel(settings.models_dir)  # the decode kernel, where a C compiler exists (docs/models.md)
    default_embedder().embed(["ready"])
    err.print(f"model and embedder ready in {settings.models_dir}")


def _load_model(settings: Settings) -> None:
    from core.llm.model import ModelLoadError, load_model

    try:
        load_model(settings)
    except ModelLoadError as exc:
        err.print(f"[red]Could not load the model:[/red] {exc}")
        raise typer.Exit(2) from exc


@app.command()
def beat() -> None:
    """Run the periodic scheduler alone (idle sweeps, compaction): exactly one per deployment,
    with workers started by `confidante worker --no-beat`."""
    settings = get_settings()
    if not settings.broker_url:
        err.print("[red]CONFIDANTE_BROKER_URL is not set.[/red] The embedded worker runs its own beat.")
        raise typer.Exit(2)
    from workers.worker import run_beat

    run_beat()


@app.command()
def doctor() -> None:
    """Check settings, data dir, model, store, broker and each platform's credentials; say what
    to fix. Exits 1 when something is broken."""
    from app.doctor import load_settings, run_checks

    settings, first = load_settings()
    findings = [first] + (run_checks(settings) if settings is not None else [])
    broken = False
    for finding in findings:
        if finding.problem is None:
            out.print(f"[green]ok[/green]    {finding.name}: {finding.detail}")
        elif finding.fatal:
            broken = True
            out.print(f"[red]FIX[/red]   {finding.name}: {finding.problem}")
        else:
            out.print(f"[yellow]note[/yellow]  {finding.name}: {finding.problem} ({finding.detail})")
    if broken:
        raise typer.Exit(1)


@app.command()
def backup(
    archive: Annotated[
        Path, typer.Argument(help="The .tar.gz to write, or a folder to write a dated one in")
    ],
) -> None:
    """Copy the data dir into one archive, consistently, while the bot runs (mode 0600: it holds
    everything people said)."""
    from datetime import UTC, datetime

    from app.backup import BackupRefused
    from app.backup import backup as take

    settings = get_settings()
    if archive.is_dir():
        archive = archive / f"confidante-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.tar.gz"
    try:
        info = take(settings, archive)
    except (FileNotFoundError, BackupRefused) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    rows = ", ".join(f"{name} {n}" for name, n in sorted(info["rows"].items()))
    err.print(f"wrote {archive} in {info['seconds']} s: {rows}; {info['journal_turns']} journaled turns")


@app.command()
def restore(
    archive: Annotated[Path, typer.Argument(help="A .tar.gz from `confidante backup`")],
    force: Annotated[bool, typer.Option(help="Move an existing data dir aside and restore over it")] = False,
) -> None:
    """Unpack a backup as the data dir (stop `confidante run` first)."""
    from app.backup import RestoreRefused
    from app.backup import restore as put_back

    settings = get_settings()
    try:
        aside = put_back(settings, archive, force=force)
    except RestoreRefused as exc:
        err.print(f"[red]Not restored:[/red] {exc}")
        raise typer.Exit(1) from exc
    if aside is not None:
        err.print(f"the previous data dir is kept in {aside}")
    err.print(f"restored {settings.data_dir}; the next start writes the journaled turns")


def _jobs(settings: Settings, *, start_worker: bool = True):
    """Background work through Celery. Without a broker, `start_worker` starts the embedded
    worker; otherwise work only waits in its queue. A broken workers package is an error, not
    a quiet "no consolidation": the import is not guarded."""
    from workers.jobs import celery_jobs

    return celery_jobs(settings, start_worker=start_worker)


def _attach(jobs, assistant) -> None:
    """Workers write profiles in another process; let the jobs refresh the chat's cache."""
    attach = getattr(jobs, "attach", None)
    if attach is not None:
        attach(assistant.store)


def _close(jobs, **kwargs) -> None:
    close = getattr(jobs, "close", None)
    if close is not None:
        close(**kwargs)


def _recall_items(recall, store, person_id: str, query: str, k: int, now=None) -> list[dict]:
    from core.memory.recall import ChatContext

    person = store.person(person_id)
    [vector] = store.embed([query])
    chat = ChatContext("console", person_id, "direct")
    items = recall.recall(person, chat, vector, k=k, budget_tokens=10_000_000, query_text=query, now=now)
    return [
        {
            "text": i.text,
            "kind": i.kind,
            "score": round(i.score, 4),
            "ts": i.ts.isoformat(),
            "source_ids": i.source_ids,
            "role": i.role,
            "context": i.context,
        }
        for i in items
    ]


@app.command()
def recall(
    person: PersonOpt,
    query: Annotated[str, typer.Argument(help="The question")] = "",
    k: Annotated[int, typer.Option("--k", help="How many items")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    queries: Annotated[
        Path | None,
        typer.Option("--queries", help="File with one question per line; one JSON list per line out"),
    ] = None,
    now: Annotated[
        str | None, typer.Option("--now", help="ISO date that 'last week' counts from (default: now)")
    ] = None,
) -> None:
    """Show what recall would hand the model for a question, with each item's source ids."""
    from datetime import UTC, datetime

    from core.memory.recall import Recall

    settings = get_settings()
    configure_logging(settings)
    store = open_cli_store(settings)
    person_id = resolve_person(store, person)

    def tokens(text: str) -> int:
        return len(text) // 4 + 1

    at = None
    if now:
        at = datetime.fromisoformat(now)
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
    questions = queries.read_text().splitlines() if queries else [query]
    if not any(q.strip() for q in questions):
        err.print("[red]Give a question[/red] (or --queries FILE).")
        raise typer.Exit(1)
    engine = Recall(store, tokens)
    for question in questions:
        items = _recall_items(engine, store, person_id, question, k, at) if question.strip() else []
        if as_json or queries:
            print(json.dumps(items, ensure_ascii=False), flush=True)
            continue
        table = Table("score", "kind", "when", "text", "sources")
        for item in items:
            table.add_row(
                f"{item['score']:.3f}",
                item["kind"],
                item["ts"][:10],
                item["text"],
                ", ".join(item["source_ids"]),
            )
        out.print(table)


@app.command("import")
def import_(
    file: Annotated[
        Path, typer.Argument(help="The export: result.json, a Slack zip, an Element JSON, or JSONL")
    ],
    person: PersonOpt,
    me: Annotated[str | None, typer.Option("--me", help="Which speaker in the file is this person")] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="telegram, slack, matrix or jsonl (detected if left out)")
    ] = None,
    visibility: Annotated[
        str, typer.Option("--visibility", help="private (default), or chat: only that chat may recall it")
    ] = "private",
    read_media: Annotated[
        bool,
        typer.Option(
            "--read-media", help="Transcribe voice notes and read photos found in the export (slow)"
        ),
    ] = False,
) -> None:
    """Import chat history from an export file as a person's turns (safe to repeat)."""
    from app.importing import run_import

    settings = get_settings()
    configure_logging(settings)
    imported_for = run_import(
        open_cli_store(settings),
        file,
        person,
        me=me,
        fmt=fmt,
        visibility=visibility,
        read_media=read_media,
        settings=settings,
    )
    if imported_for:
        jobs = _jobs(settings, start_worker=False)  # the work waits for `confidante run`'s worker
        try:
            jobs.after_turn(imported_for)  # consolidation runs over the imported history too
        finally:
            _close(jobs)


@memory_app.command("list")
def memory_list(person: PersonOpt) -> None:
    """What is remembered about a person, numbered like /memory."""
    asyncio.run(_command(person, "/memory"))


@memory_app.command("forget")
def memory_forget(person: PersonOpt, what: Annotated[str, typer.Argument(help="A number or words")]) -> None:
    """Forget an item by number or every item containing some words."""
    asyncio.run(_command(person, f"/forget {what}"))


@memory_app.command("export")
def memory_export(
    person: PersonOpt,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default stdout)")
    ] = None,
) -> None:
    """All of a person's data as JSON."""
    from core.memory.export import export_person

    settings = get_settings()
    store = open_cli_store(settings)
    data = json.dumps(
        export_person(store, resolve_person(store, person)), ensure_ascii=False, indent=2, default=str
    )
    if output:
        output.write_text(data)
        err.print(f"wrote {output}")
    else:
        print(data)


async def _command(person: str, text: str) -> None:
    """Run a chat command for a person without loading the model."""
    from bots.console import render
    from core.assistant import Assistant
    from core.messages import Incoming

    settings = get_settings()
    configure_logging(settings)
    store = open_cli_store(settings)
    person_id = resolve_person(store, person)
    assistant = Assistant(settings, store, _NoModel())
    accounts = store.identities_of(person_id)
    console_ids = [a.platform_user_id for a in accounts if a.platform == "console"]
    sender = console_ids[0] if console_ids else person_id
    if not console_ids:
        store.link_identity("console", sender, person_id)
    msg = Incoming(
        platform="console", chat_id=sender, sender_id=sender, text=text, message_id=uuid.uuid4().hex
    )
    reply = await assistant.handle(msg)
    if reply is not None:
        await render(reply, out)


class _NoModel:
    """Commands never generate; this keeps `memory list` from loading the model."""

    context_tokens = 2048

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    async def stream(self, messages, **kwargs):
        raise RuntimeError("no model loaded for commands")
        yield ""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
