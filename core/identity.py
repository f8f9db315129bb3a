"""Who is talking: (platform, account) -> person, and joining accounts with one-time codes.

A link code is a key to someone's whole history: whoever redeems it joins the issuer's person
and can then read it with /memory and /export. So codes are single use, live ten minutes, are
kept only as hashes, and guessing is bounded twice: per account (5 tries per 10 minutes) and
across all accounts together (`link_failures_global` wrong codes per 10 minutes, after which
every outstanding code is voided and linking pauses), so many throwaway accounts gain nothing.
With 32^8 ≈ 1.1e12 codes and at most 20 wrong guesses per 10 minutes, a year of nonstop guessing
against 100 live codes succeeds with probability below 1e-4.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass

import structlog

from core.memory.records import Person
from core.memory.store import Store

log = structlog.get_logger(__name__)

CODE_TTL_SECONDS = 600
CODE_LENGTH = 8
MAX_LINK_ATTEMPTS = 5
ATTEMPT_WINDOW_SECONDS = 600
DEFAULT_GLOBAL_FAILURES = 20
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_CODE_IN_TEXT = re.compile(rf"[{_CODE_ALPHABET}]{{{CODE_LENGTH}}}")


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:40]


def new_person_id(platform: str, platform_user_id: str) -> str:
    """Readable where the account name is readable (console), unique everywhere."""
    if platform == "console" and _slug(platform_user_id) == platform_user_id:
        return platform_user_id
    digest = hashlib.sha256(f"{platform}\x1f{platform_user_id}".encode("utf-8", "surrogatepass")).hexdigest()
    return f"{platform}-{digest[:12]}"


def _fresh_person_id(platform: str) -> str:
    return f"{platform}-{secrets.token_hex(8)}"


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def normalize_code(text: str) -> str:
    """What a person may type for a code: any case, spaces or dashes in between."""
    return re.sub(r"[\s\-]", "", text).upper()


@dataclass
class _Code:
    person_id: str
    expires: float


class LinkError(Exception):
    """A link code that cannot be used; the message is safe to show."""


class Identities:
    def __init__(
        self, store: Store, clock=time.monotonic, *, global_failures: int = DEFAULT_GLOBAL_FAILURES
    ) -> None:
        self.store = store
        self.clock = clock
        self.global_failures = global_failures
        self._codes: dict[str, _Code] = {}  # sha256(code) -> who asked for it
        self._attempts: dict[str, list[float]] = {}
        self._failures: deque[float] = deque()
        self._paused_until = 0.0

    # -- accounts -----------------------------------------------------------------------------

    def resolve(self, platform: str, platform_user_id: str, display_name: str = "") -> Person:
        person_id = self.store.person_for(platform, platform_user_id)
        if person_id is not None:
            person = self.store.person(person_id)
            if person is not None:
                return person
        if person_id is None:
            person_id = new_person_id(platform, platform_user_id)
            # The readable id may already be someone else's (an account that was unlinked, a
            # console name that looks like a hash): never hand a new account an existing person.
            if self.store.person(person_id) is not None and self.store.identities_of(person_id):
                person_id = _fresh_person_id(platform)
        person = self.store.person(person_id) or Person(person_id, display_name or platform_user_id)
        self.store.save_person(person)
        self.store.link_identity(platform, platform_user_id, person_id)
        return person

    # -- link codes ---------------------------------------------------------------------------

    def issue_code(self, person_id: str) -> str:
        """A single-use code that joins another account to this person within ten minutes.

        Asking again voids the person's earlier code, so at most one code per person is live.
        """
        now = self.clock()
        self._codes = {h: c for h, c in self._codes.items() if c.expires > now and c.person_id != person_id}
        code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(CODE_LENGTH))
        self._codes[_digest(code)] = _Code(person_id, now + CODE_TTL_SECONDS)
        return code

    def live_codes(self) -> int:
        now = self.clock()
        return sum(1 for c in self._codes.values() if c.expires > now)

    def burn_codes_in(self, text: str) -> int:
        """Void every live code that appears in `text` (a code pasted into a group is public)."""
        if not self._codes:
            return 0
        flat = normalize_code(text)
        burned = 0
        for start in range(len(flat) - CODE_LENGTH + 1):  # every window: codes may touch other text
            candidate = flat[start : start + CODE_LENGTH]
            if _CODE_IN_TEXT.fullmatch(candidate) and self._codes.pop(_digest(candidate), None):
                burned += 1
        if burned:
            log.info("link code voided: it was shown in a group", count=burned)
        return burned

    def _note_failure(self, now: float) -> None:
        self._failures.append(now)
        while self._failures and self._failures[0] <= now - ATTEMPT_WINDOW_SECONDS:
            self._failures.popleft()
        if len(self._failures) >= self.global_failures:
            # Someone is guessing from many accounts: void every code and pause linking.
            self._codes.clear()
            self._failures.clear()
            self._paused_until = now + ATTEMPT_WINDOW_SECONDS
            log.warning("linking paused: too many wrong link codes across accounts")

    def redeem(self, code: str, platform: str, platform_user_id: str) -> tuple[str, str]:
        """Join this account to the code's person; returns (person kept, person merged away)."""
        key = f"{platform}\x1f{platform_user_id}"
        now = self.clock()
        if now < self._paused_until:
            raise LinkError(
                "Linking is paused for a few minutes because many wrong codes were tried. "
                "Ask for a new code with /link in a little while."
            )
        attempts = [t for t in self._attempts.get(key, []) if t > now - ATTEMPT_WINDOW_SECONDS]
        if len(attempts) >= MAX_LINK_ATTEMPTS:
            raise LinkError("Too many link attempts. Wait ten minutes, then ask for a new code with /link.")
        attempts.append(now)
        self._attempts[key] = attempts
        if len(self._attempts) > 10_000:
            self._attempts = {
                k: v for k, v in self._attempts.items() if v and v[-1] > now - ATTEMPT_WINDOW_SECONDS
            }
        entry = self._codes.pop(_digest(normalize_code(code)), None)
        if entry is None or entry.expires <= now:
            self._note_failure(now)
            raise LinkError(
                "That code is not valid or has expired. Send /link in your other chat for a new one."
            )
        target = entry.person_id
        if self.store.person(target) is None:  # the issuer erased themselves meanwhile
            raise LinkError("That code's account no longer exists. Send /link in your other chat.")
        current = self.store.person_for(platform, platform_user_id)
        self._attempts.pop(key, None)
        if current == target:
            return target, target
        if current is not None:
            self._merge(current, target)
        self.store.link_identity(platform, platform_user_id, target)
        log.info("accounts linked", platform=platform, person=target)
        return target, current or target

    def _merge(self, current: str, target: str) -> None:
        """Move `current`'s rows to `target`, scopes untouched; settings combine the cautious way."""
        self.store.reassign_person(current, target)
        merged = self.store.person(current)
        kept = self.store.person(target)
        if merged is not None and kept is not None:
            shared = set(kept.settings.shared_chats) | set(merged.settings.shared_chats)
            kept.settings.shared_chats = sorted(shared)
            kept.settings.paused = kept.settings.paused or merged.settings.paused
            if merged.profile and merged.profile not in kept.profile:
                kept.profile = "\n".join(p for p in (kept.profile, merged.profile) if p)
            self.store.save_person(kept)
        self.store.delete_person_row(current)

    def unlink(self, platform: str, platform_user_id: str) -> str | None:
        """Separate this account: it becomes a new, empty person. Returns the new person id.

        Everything said so far stays with the accounts that remain; the separated account
        gets a person id never used before, so nothing of theirs is reachable from it.
        """
        person_id = self.store.person_for(platform, platform_user_id)
        if person_id is None:
            return None
        if len(self.store.identities_of(person_id)) <= 1:
            return None
        self.store.unlink_identity(platform, platform_user_id)
        fresh = _fresh_person_id(platform)
        self.store.save_person(Person(fresh, platform_user_id))
        self.store.link_identity(platform, platform_user_id, fresh)
        log.info("account unlinked", platform=platform, person=fresh)
        return fresh
