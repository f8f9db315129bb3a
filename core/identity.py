"""Who is talking: (platform, account) -> person, and joining accounts with one-time codes."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from core.memory.records import Person
from core.memory.store import Store

CODE_TTL_SECONDS = 600
MAX_LINK_ATTEMPTS = 5
ATTEMPT_WINDOW_SECONDS = 600
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:40]


def new_person_id(platform: str, platform_user_id: str) -> str:
    """Readable where the account name is readable (console), unique everywhere."""
    if platform == "console" and _slug(platform_user_id) == platform_user_id:
        return platform_user_id
    digest = hashlib.sha256(f"{platform}\x1f{platform_user_id}".encode()).hexdigest()[:12]
    return f"{platform}-{digest}"


@dataclass
class _Code:
    person_id: str
    expires: float


class LinkError(Exception):
    """A link code that cannot be used; the message is safe to show."""


class Identities:
    def __init__(self, store: Store, clock=time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self._codes: dict[str, _Code] = {}
        self._attempts: dict[str, list[float]] = {}

    def resolve(self, platform: str, platform_user_id: str, display_name: str = "") -> Person:
        person_id = self.store.person_for(platform, platform_user_id)
        if person_id is not None:
            person = self.store.person(person_id)
            if person is not None:
                return person
        person_id = person_id or new_person_id(platform, platform_user_id)
        person = self.store.person(person_id) or Person(person_id, display_name or platform_user_id)
        self.store.save_person(person)
        self.store.link_identity(platform, platform_user_id, person_id)
        return person

    def issue_code(self, person_id: str) -> str:
        """A single-use code that joins another account to this person within ten minutes."""
        now = self.clock()
        self._codes = {c: v for c, v in self._codes.items() if v.expires > now and v.person_id != person_id}
        code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(8))
        self._codes[code] = _Code(person_id, now + CODE_TTL_SECONDS)
        return code

    def redeem(self, code: str, platform: str, platform_user_id: str) -> tuple[str, str]:
        """Join this account to the code's person; returns (person kept, person merged away)."""
        key = f"{platform}\x1f{platform_user_id}"
        now = self.clock()
        attempts = [t for t in self._attempts.get(key, []) if t > now - ATTEMPT_WINDOW_SECONDS]
        if len(attempts) >= MAX_LINK_ATTEMPTS:
            raise LinkError("Too many link attempts. Wait ten minutes, then ask for a new code with /link.")
        attempts.append(now)
        self._attempts[key] = attempts
        entry = self._codes.pop(code.strip().upper(), None)
        if entry is None or entry.expires <= now:
            raise LinkError(
                "That code is not valid or has expired. Send /link in your other chat for a new one."
            )
        target = entry.person_id
        current = self.store.person_for(platform, platform_user_id)
        if current == target:
            return target, target
        if current is not None:
            self.store.reassign_person(current, target)
            merged = self.store.person(current)
            if merged is not None:
                kept = self.store.person(target)
                if kept is not None:
                    shared = set(kept.settings.shared_chats) | set(merged.settings.shared_chats)
                    kept.settings.shared_chats = sorted(shared)
                    self.store.save_person(kept)
                self.store.delete_person_row(current)
        self.store.link_identity(platform, platform_user_id, target)
        self._attempts.pop(key, None)
        return target, current or target

    def unlink(self, platform: str, platform_user_id: str) -> str | None:
        """Separate this account: it becomes a new, empty person. Returns the new person id."""
        person_id = self.store.person_for(platform, platform_user_id)
        if person_id is None:
            return None
        if len(self.store.identities_of(person_id)) <= 1:
            return None
        self.store.unlink_identity(platform, platform_user_id)
        return self.resolve(platform, platform_user_id).person_id
