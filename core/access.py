"""Who may talk to the assistant, and how fast.

`gate` runs before anything is stored or any person is created, so a stranger's messages leave
no trace. `throttle` keeps token buckets per person and per chat; whoever runs over hears one
polite notice, then silence until the bucket refills, so a flood never becomes a flood of
notices. Buckets that have refilled are dropped, so many throwaway ids cannot grow memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import structlog

from core.config import Settings
from core.memory.records import Person
from core.messages import Incoming, Reply

log = structlog.get_logger(__name__)

REFUSAL = "Sorry, this assistant is private. Ask its owner to add you."
SLOW_DOWN = "You're sending messages faster than I can answer. Give me a minute, then go on."
REFUSAL_NOTICE_SECONDS = 3600
PRUNE_EVERY = 1024


@dataclass
class Bucket:
    rate_per_second: float
    burst: int
    tokens: float = -1.0
    stamp: float = field(default_factory=time.monotonic)
    noticed: bool = False

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens = float(self.burst)
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate_per_second)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.noticed = False
            return True
        return False

    def full(self, now: float) -> bool:
        return self.tokens < 0 or self.tokens + (now - self.stamp) * self.rate_per_second >= self.burst


class Access:
    def __init__(self, settings: Settings, clock=time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._people: dict[str, Bucket] = {}
        self._chats: dict[tuple[str, str], Bucket] = {}
        self._refused: dict[tuple[str, str], float] = {}
        self._takes = 0

    # -- who --------------------------------------------------------------------------------

    def allowed(self, msg: Incoming) -> bool:
        """Exact matches only (no prefixes, no patterns): an allow-list cannot be widened by an id."""
        mode = self.settings.access
        if mode == "open" or msg.platform == "console" or self.is_admin(msg):
            return True
        if mode == "users":
            return f"{msg.platform}:{msg.sender_id}" in self.settings.allowed_users
        allowed = self.settings.allowed_chats
        if f"{msg.platform}:{msg.chat_id}" in allowed:
            return True
        return msg.workspace is not None and f"{msg.platform}:{msg.workspace}" in allowed

    def is_admin(self, msg: Incoming) -> bool:
        return msg.platform == "console" or f"{msg.platform}:{msg.sender_id}" in self.settings.admins

    def gate(self, msg: Incoming) -> Reply | None:
        """None to go on; otherwise a Reply to send instead (empty text: drop silently).

        Called before the sender becomes a person, so refused messages store nothing.
        """
        if self.allowed(msg):
            return None
        log.info("message from a user who is not allowed", platform=msg.platform, chat_kind=msg.chat_kind)
        if msg.chat_kind != "direct":
            return Reply(text="")
        now = self.clock()
        key = (msg.platform, msg.sender_id)
        if self._refused.get(key, -1e18) > now - REFUSAL_NOTICE_SECONDS:
            return Reply(text="")
        if len(self._refused) > 10 * PRUNE_EVERY:
            self._refused = {k: t for k, t in self._refused.items() if t > now - REFUSAL_NOTICE_SECONDS}
        self._refused[key] = now
        return Reply(text=REFUSAL)

    # -- how fast ---------------------------------------------------------------------------

    def throttle(self, msg: Incoming, person: Person) -> Reply | None:
        """None to go on; a Reply to send instead (empty text: drop silently)."""
        if msg.platform == "console" or not msg.addressed:
            return None
        now = self.clock()
        s = self.settings
        person_bucket = self._people.setdefault(
            person.person_id, Bucket(s.rate_per_minute_person / 60, s.rate_burst_person, stamp=now)
        )
        chat_bucket = self._chats.setdefault(
            (msg.platform, msg.chat_id), Bucket(s.rate_per_minute_chat / 60, s.rate_burst_chat, stamp=now)
        )
        self._takes += 1
        if self._takes % PRUNE_EVERY == 0:
            self._prune(now)
        for bucket in (person_bucket, chat_bucket):
            if not bucket.take(now):
                if bucket.noticed:
                    return Reply(text="")
                bucket.noticed = True
                log.info("rate limited", platform=msg.platform, person=person.person_id)
                return Reply(text=SLOW_DOWN)
        return None

    def check(self, msg: Incoming, person: Person) -> Reply | None:
        """Both checks, for callers that already know the person."""
        return self.gate(msg) or self.throttle(msg, person)

    def _prune(self, now: float) -> None:
        self._people = {k: b for k, b in self._people.items() if not b.full(now)}
        self._chats = {k: b for k, b in self._chats.items() if not b.full(now)}

    def bucket_count(self) -> int:
        return len(self._people) + len(self._chats)
