"""Questions about the broker that health checks, `confidante doctor` and metrics ask: is it
reachable, and how much work waits in it. Cheap and bounded by the connect timeout."""

from __future__ import annotations

import redis

from core.config import Settings
from workers.app import QUEUE, is_embedded, queue_dir, redacted_url


def _client(settings: Settings) -> redis.Redis:
    timeout = settings.broker_connect_timeout
    return redis.Redis.from_url(settings.broker_url, socket_connect_timeout=timeout, socket_timeout=timeout)


def check(settings: Settings) -> str | None:
    """None when the broker answers; else what is wrong, in words an operator can act on."""
    if is_embedded(settings):
        folder = queue_dir(settings)
        if folder.exists() and not _writable(folder):
            return f"the embedded broker's folder {folder} is not writable"
        return None
    if not settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
        return f"CONFIDANTE_BROKER_URL must be a redis:// URL, not {redacted_url(settings.broker_url)}"
    try:
        with _client(settings) as client:
            client.ping()
    except redis.RedisError as exc:
        return f"the broker {redacted_url(settings.broker_url)} does not answer ({type(exc).__name__}: {exc})"
    return None


def queue_depth(settings: Settings) -> int:
    """Tasks waiting to be picked up (Redis: the queue's list; embedded: its message files)."""
    if is_embedded(settings):
        folder = queue_dir(settings)
        return sum(1 for _ in folder.glob("*.msg")) if folder.exists() else 0
    with _client(settings) as client:
        return int(client.llen(QUEUE))


def _writable(folder) -> bool:
    import os

    return os.access(folder, os.W_OK | os.X_OK)
