"""One-time sign-in links for the personal web page (`/web` in a direct chat).

A link is a key to someone's whole history, like a link code (core/identity.py), so it gets the
same care: 192 random bits, single use, short-lived, bound to the account that asked for it,
and kept only as a SHA-256 hash, so neither memory dumps nor logs hold a usable token. Asking
again voids the account's earlier link. The web page resolves the account to its person on
every request, so linking or unlinking accounts later changes what a session reaches.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

TOKEN_BYTES = 24


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Account:
    """The chat account a link or session belongs to."""

    platform: str
    account: str


@dataclass
class _Link:
    who: Account
    expires: float


class SignInLinks:
    """Live sign-in tokens (hashes only), in this process: a restart voids them all."""

    def __init__(self, ttl_seconds: float = 600, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._links: dict[str, _Link] = {}

    def issue(self, platform: str, account: str) -> str:
        """A new token for this account; its earlier one stops working."""
        now = self.clock()
        who = Account(platform, account)
        self._links = {h: x for h, x in self._links.items() if x.expires > now and x.who != who}
        token = secrets.token_hex(TOKEN_BYTES)  # hex: survives every platform's markup untouched
        self._links[digest(token)] = _Link(who, now + self.ttl_seconds)
        return token

    def valid(self, token: str) -> bool:
        """Whether the token would sign in now (without using it up)."""
        link = self._find(token)
        return link is not None and link.expires > self.clock()

    def redeem(self, token: str) -> Account | None:
        """Use the token up: the account it was issued to, or None (unknown, used or expired)."""
        link = self._find(token)
        if link is None:
            return None
        self._links.pop(digest(token), None)
        return link.who if link.expires > self.clock() else None

    def _find(self, token: str) -> _Link | None:
        if not isinstance(token, str) or len(token) != 2 * TOKEN_BYTES:
            return None
        # a lookup by the token's hash: its timing tells nothing about live tokens
        return self._links.get(digest(token))
