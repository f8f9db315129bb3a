"""Who may invite the bot, and whether a room message is addressed to it.

Pure functions over event content, so the rules are tested without a homeserver.
"""

from __future__ import annotations

import re
from typing import Any


def server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


def inviter_allowed(inviter: str, own_user_id: str, allowed: list[str]) -> bool:
    """Entries are "@user:server", "server" (or ":server") or "*"; none = the bot's own homeserver."""
    server = server_of(inviter)
    if not allowed:
        return bool(server) and server == server_of(own_user_id)
    for entry in allowed:
        entry = entry.strip()
        if entry == "*" or entry == inviter or (not entry.startswith("@") and entry.lstrip(":") == server):
            return True
    return False


def relation(content: dict[str, Any]) -> dict[str, Any]:
    rel = content.get("m.relates_to")
    return rel if isinstance(rel, dict) else {}


def thread_root(content: dict[str, Any]) -> str | None:
    rel = relation(content)
    root = rel.get("event_id") if rel.get("rel_type") == "m.thread" else None
    return root if isinstance(root, str) else None


def replied_to(content: dict[str, Any]) -> str | None:
    """The event this one really replies to (a thread's fallback reply does not count)."""
    rel = relation(content)
    if rel.get("rel_type") == "m.thread" and rel.get("is_falling_back", False):
        return None
    target = rel.get("m.in_reply_to")
    event_id = target.get("event_id") if isinstance(target, dict) else None
    return event_id if isinstance(event_id, str) else None


def strip_reply_fallback(body: str) -> str:
    """Older clients quote the replied-to message as leading "> " lines; drop that quote."""
    lines = body.split("\n")
    if not lines or not lines[0].startswith("> <"):
        return body
    i = 0
    while i < len(lines) and lines[i].startswith(">"):
        i += 1
    return "\n".join(lines[i:]).lstrip("\n")


def _name_pattern(names: list[str]) -> re.Pattern[str] | None:
    names = [n for n in names if n]
    if not names:
        return None
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<![\w@]){'(?:' + alternatives + ')'}(?![\w@])", re.IGNORECASE)


def mentions_bot(content: dict[str, Any], body: str, user_id: str, display_name: str | None) -> bool:
    """m.mentions (current spec) or the display name / user id in the body (older clients)."""
    mentions = content.get("m.mentions")
    if isinstance(mentions, dict):
        ids = mentions.get("user_ids")
        if isinstance(ids, list) and user_id in ids:
            return True
    pattern = _name_pattern([user_id, display_name or ""])
    return bool(pattern and pattern.search(body))


def strip_leading_mention(body: str, user_id: str, display_name: str | None) -> str:
    """'Confidante: what is…' -> 'what is…' so the model and the command parser see the question."""
    names = [re.escape(user_id)] + ([f"@?{re.escape(display_name)}"] if display_name else [])
    pattern = rf"^\s*(?:{'|'.join(names)})(?![\w@])\s*[:,]?\s*"
    stripped = re.sub(pattern, "", body, count=1, flags=re.IGNORECASE)
    return stripped or body


def is_command(body: str, commands: list[str]) -> bool:
    word = body.strip().split(maxsplit=1)[0] if body.strip() else ""
    if not word.startswith("/"):
        return False
    known = {c.lstrip("/").lower() for c in commands}
    return word[1:].lower() in known
