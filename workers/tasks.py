"""The background tasks. Each is idempotent: running it twice, or again after a crash half-way,
leaves the same memories (see core/memory/consolidate.py), so `task_acks_late` redelivery and
retries are safe."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import structlog
from celery import Task

from core.config import BUNDLED_MODEL, Settings, get_settings
from core.memory.consolidate import Consolidator
from core.memory.extract import Extractor, LLMExtractor, RuleExtractor
from core.memory.records import Turn
from core.memory.store import Store, open_store
from core.reminders.dispatch import Clock
from core.reminders.followups import FollowUps
from core.reminders.store import ReminderStore
from workers import observe, training  # noqa: F401  (observe: counts tasks, binds request ids)
from workers.app import (
    TASK_COMPACT,
    TASK_CONSOLIDATE,
    TASK_DRAINED,
    TASK_FORGET_PERSON,
    TASK_REFRESH_ADAPTER,
    TASK_REFRESH_PROFILE,
    TASK_SWEEP,
    app,
    broker_dir,
)
from workers.locks import person_lock

log = structlog.get_logger(__name__)

RETRY = {
    "autoretry_for": (Exception,),
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 8,
    "acks_late": True,
}


class PersonBusy(Exception):
    """Another worker is consolidating this person; try again shortly."""


def settings() -> Settings:
    return app.confidante_settings if hasattr(app, "confidante_settings") else get_settings()


@lru_cache(maxsize=1)
def store() -> Store:
    """One store per worker process, opened on first use (after a prefork fork), the same way
    the chat process opens its own (the search cache's settings included)."""
    return open_store(settings())


@lru_cache(maxsize=1)
def extractor() -> Extractor:
    """Rules for the bundled model (too small for reliable JSON); an LLM for a capable one."""
    s = settings()
    if s.extractor == "rules" or (s.extractor == "auto" and s.model == BUNDLED_MODEL):
        return RuleExtractor()
    try:
        return LLMExtractor(_model_completion(s))
    except Exception as exc:
        log.warning(
            "LLM extractor unavailable, using rules; set CONFIDANTE_EXTRACTOR=rules to silence",
            error=str(exc)[:200],
        )
        return RuleExtractor()


def _model_completion(s: Settings) -> Callable[[list[dict[str, str]]], str]:
    if s.remote_generation:
        from core.llm.remote import RemoteEngine

        engine = RemoteEngine(s)
    else:
        from core.llm.engine import Engine
        from core.llm.model import load_model

        engine = Engine(load_model(s), s)

    def complete(messages: list[dict[str, str]]) -> str:
        async def collect() -> str:
            return "".join([d async for d in engine.stream(messages, max_new_tokens=512)])

        return asyncio.run(collect())

    return complete


@lru_cache(maxsize=1)
def reminder_store() -> ReminderStore:
    """The bot's reminder store (`<data_dir>/reminders.sqlite3`, SQLite in WAL mode: a worker
    may write while the bot reads). Follow-ups go in here; the bot's dispatcher sends them."""
    return ReminderStore(settings().data_dir / "reminders.sqlite3")


def followups() -> FollowUps:
    s = settings()
    clock = Clock(s.reminder_clock_speed, s.reminder_clock_origin, s.reminder_clock_anchor)
    return FollowUps(reminder_store(), clock, s.default_timezone)


def propose_followups(person_id: str, read: list[Turn]) -> int:
    """After consolidation: the person's open loops become follow-ups, if they opted in."""
    person = store().refresh_person(person_id)  # /followups is set in the bot process
    if person is None or not person.settings.followups or not read:
        return 0
    since = min(t.ts for t in read) - timedelta(days=30)

    def has_bot_chat(platform: str, chat_id: str) -> bool:  # a live direct chat: the bot answered there
        turns = store().turns_of(person_id, platform=platform, chat_id=chat_id, since=since)
        return any(t.role == "assistant" for t in turns)

    return len(followups().propose(person_id, person.settings.timezone, read, has_bot_chat))


def consolidator() -> Consolidator:
    return Consolidator(
        store(), extractor(), pause_after_first_write=settings().consolidate_write_delay_seconds
    )


@app.task(bind=True, name=TASK_CONSOLIDATE, **RETRY)
def consolidate(self: Task, person_id: str) -> dict[str, int]:
    """Read the person's new turns and revise their memories and profile."""
    with person_lock(settings(), person_id) as held:
        if not held:
            raise self.retry(exc=PersonBusy(person_id), countdown=min(60, 2 ** (self.request.retries + 1)))
        result = consolidator().run(person_id)
        try:
            proposed = propose_followups(person_id, result.read)
        except Exception:  # a follow-up is a nicety: consolidation's work stands without it
            log.exception("follow-ups not proposed", person=person_id)
            proposed = 0
    if settings().adapter_auto_refresh and settings().adapters_enabled:
        refresh_adapter.delay(person_id)  # skips cheaply until there is enough new material
    return {"turns": result.turns_read, "followups": proposed, **result.summary()}


@app.task(bind=True, name=TASK_REFRESH_PROFILE, **RETRY)
def refresh_profile(self: Task, person_id: str) -> str:
    """Something was forgotten: the profile must not keep it."""
    with person_lock(settings(), person_id) as held:
        if not held:
            raise self.retry(exc=PersonBusy(person_id), countdown=min(60, 2 ** (self.request.retries + 1)))
        c = consolidator()
        c.drop_orphans(person_id)
        profile = c.refresh_profile(person_id)
    training.memory_changed(person_id, store(), settings())  # weights trained on it go too
    if settings().adapter_auto_refresh and settings().adapters_enabled:
        refresh_adapter.delay(person_id)
    return profile


@app.task(bind=True, name=TASK_REFRESH_ADAPTER, **RETRY)
def refresh_adapter(self: Task, person_id: str) -> str:
    """Train, gate and maybe promote this person's adapter (see workers/training.py)."""
    result = training.refresh_adapter(person_id, store(), settings())
    if result.status == "busy":
        raise self.retry(exc=PersonBusy(person_id), countdown=min(300, 2 ** (self.request.retries + 3)))
    log.info("adapter refresh", person=person_id, status=result.status)
    return result.status


@app.task(bind=True, name=TASK_FORGET_PERSON, **RETRY)
def forget_person(self: Task, person_id: str) -> None:
    """The person was erased: drop what workers derived and keep outside the tables."""
    s = settings()
    # after any consolidation of this person that was running when they were erased
    with person_lock(s, person_id, wait=30) as held:
        if not held:
            raise self.retry(exc=PersonBusy(person_id), countdown=min(60, 2 ** (self.request.retries + 1)))
        store().refresh_person(person_id)
        consolidator().drop_orphans(person_id)
        training.forget_person(person_id, s)
    log.info("person's derived data dropped", person=person_id)


@app.task(name=TASK_SWEEP, acks_late=True)
def sweep() -> int:
    """Beat: consolidate people whose unread turns went quiet (fewer than the per-turn trigger,
    or work lost while a broker or worker was down). Returns how many were queued."""
    due = due_people(store(), settings().consolidate_idle_seconds)
    for person_id in due:
        consolidate.delay(person_id)
    if due:
        log.info("sweep queued consolidations", people=len(due))
    return len(due)


def due_people(st: Store, idle_seconds: float, now: datetime | None = None) -> list[str]:
    """People with unread turns, the newest of them older than `idle_seconds`."""
    quiet = (now or datetime.now(UTC)) - timedelta(seconds=idle_seconds)
    checker = Consolidator(st, RuleExtractor())
    due = []
    for person in st.refresh_people():
        pending = checker.pending(person)
        if pending and pending[-1].ts <= quiet:
            due.append(person.person_id)
    return due


@app.task(name=TASK_COMPACT, acks_late=True)
def compact() -> None:
    """Beat: scalar indexes and table compaction, so per-person filters stay fast."""
    store().ensure_indexes()
    log.info("tables compacted")


@app.task(name=TASK_DRAINED)
def drained(token: str) -> None:
    """Embedded mode: a marker queued last; when it runs, everything queued before it ran."""
    folder = broker_dir(settings()) / "drained"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / Path(token).name).touch()
