"""The background work the core asks for; the composition root decides who does it (Celery)."""

from __future__ import annotations

from typing import Protocol


class Jobs(Protocol):
    def after_turn(self, person_id: str) -> None:
        """A person said something: consolidate their memory when enough has accumulated."""

    def memory_changed(self, person_id: str) -> None:
        """Something was forgotten: what was learned from it (profile, adapter) must follow."""

    def forget_person(self, person_id: str) -> None:
        """A person was erased: drop everything derived from them (adapters, caches)."""


class NoJobs:
    """No background work: a console session or a test that does not need it."""

    def after_turn(self, person_id: str) -> None:
        return None

    def memory_changed(self, person_id: str) -> None:
        return None

    def forget_person(self, person_id: str) -> None:
        return None
