"""Signed-in sessions of the web page, in this process (a restart signs everyone out).

The cookie holds a random session id; the server keeps only its hash, the account it belongs
to and the session's CSRF token, which every form that changes something must send back.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core.signin import Account, digest

COOKIE = "confidante_session"
SECURE_COOKIE = "__Host-confidante_session"  # the browser only accepts it over TLS, for this host


@dataclass
class Session:
    who: Account
    csrf: str
    expires: float
    notices: list[str] = field(default_factory=list)  # shown once, on the next page

    def csrf_ok(self, sent: str | None) -> bool:
        return isinstance(sent, str) and hmac.compare_digest(sent.encode(), self.csrf.encode())


class Sessions:
    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._by_hash: dict[str, Session] = {}

    def start(self, who: Account) -> tuple[str, Session]:
        """A new session id (for the cookie) and its session."""
        now = self.clock()
        self._by_hash = {h: s for h, s in self._by_hash.items() if s.expires > now}
        sid = secrets.token_urlsafe(32)
        session = Session(who, secrets.token_urlsafe(32), now + self.ttl_seconds)
        self._by_hash[digest(sid)] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid or len(sid) > 100:
            return None
        session = self._by_hash.get(digest(sid))
        if session is None or session.expires <= self.clock():
            return None
        return session

    def end(self, sid: str | None) -> None:
        if sid:
            self._by_hash.pop(digest(sid), None)
