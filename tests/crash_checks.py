"""What the crash tests check after a restart, whatever the platform: every message has one
complete answer, and the answer is the one the assistant stored."""

from __future__ import annotations

import html
import re
from pathlib import Path

from core.assistant import LATE_NOTE


def stored_replies(data_dir: Path, platform: str) -> dict[tuple[str, str], str]:
    """(chat id, message id) -> the assistant's stored reply text (read once the process stopped)."""
    import lancedb

    table = lancedb.connect(str(data_dir / "lancedb")).open_table("turns")
    rows = table.to_arrow().select(["platform", "chat_id", "message_id", "role", "text"]).to_pylist()
    return {
        (r["chat_id"], r["message_id"]): r["text"]
        for r in rows
        if r["platform"] == platform and r["role"] == "assistant"
    }


def words(text: str) -> str:
    """The text without markup or spacing: what survives every platform's rendering."""
    return re.sub(r"\W+", "", html.unescape(text))


def complete(shown: str, stored: str) -> bool:
    """The shown answer is the whole stored reply (a late one starts with the late note)."""
    body = shown[len(LATE_NOTE.strip()) :] if shown.startswith(LATE_NOTE.strip()) else shown
    return bool(words(stored)) and words(body) == words(stored)


def inbox_states(data_dir: Path) -> dict[tuple[str, str, str], str]:
    """(platform, chat id, message id) -> state, read from the running process's inbox."""
    import sqlite3

    path = data_dir / "inbox.sqlite3"
    if not path.exists():
        return {}
    db = sqlite3.connect(path)
    try:
        return {
            (p, c, m): s
            for p, c, m, s in db.execute("SELECT platform, chat_id, message_id, state FROM inbox")
        }
    finally:
        db.close()


async def until(predicate, timeout: float) -> None:
    """Poll `predicate` (it reads files and fakes) until it holds."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s")
        await asyncio.sleep(0.05)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
