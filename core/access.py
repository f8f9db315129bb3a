"""Who may talk to the assistant, and how fast.

Token buckets per person and per chat; a person who runs over hears one polite notice, then
silence until the bucket refills, so a flood never turns into a flood of notices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import structlog

from core.config import Settings
from core.memory.records import Person
from core.messages import Incoming, Reply

log = structlog.get_logger(__name__)


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


class Access:
    def __init__(self, settings: Settings, clock=time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._people: dict[str, Bucket] = {}
        self._chats: dict[tuple[str, str], Bucket] = {}

    def allowed(self, msg: Incoming) -> bool:
        mode = self.settings.access
        if mode == "open" or msg.platform == "console":
            return True
        if mode == "users":
            return f"{msg.platform}:{msg.sender_id}" in self.settings.allowed_users
        return f"{msg.platform}:{msg.chat_id}" in self.settings.allowed_chats

    def is_admin(self, msg: Incoming) -> bool:
        return msg.platform == "console" or f"{msg.platform}:{msg.sender_id}" in self.settings.admins

    def check(self, msg: Incoming, person: Person) -> Reply | None:
        """None to go on; a Reply to send instead (empty text: drop silently)."""
        if not self.allowed(msg):
            log.info("message from a user who is not allowed", platform=msg.platform)
            if msg.chat_kind == "direct":
                return Reply(text="Sorry, this assistant is private. Ask its owner to add you.")
            return Reply(text="")
        if msg.platform == "console" or not msg.addressed:
            return None
        now = self.clock()
        s = self.settings
        person_bucket = self._people.setdefault(
            person.person_id, Bucket(s.rate_per_minute_person / 60, s.rate_burst_person)
        )
        chat_bucket = self._chats.setdefault(
            (msg.platform, msg.chat_id), Bucket(s.rate_per_minute_chat / 60, s.rate_burst_chat)
        )
        for bucket in (person_bucket, chat_bucket):
            if not bucket.take(now):
                if bucket.noticed:
                    return Reply(text="")
                bucket.noticed = True
                log.info("rate limited", platform=msg.platform, person=person.person_id)
                return Reply(
                    text="You're sending messages faster than I can answer. Give me a minute, then go on."
                )
        return None
