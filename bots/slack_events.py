"""Slack events -> `Incoming`: which messages address the assistant, and whose they are.

Slack user and channel ids are only unique inside a workspace, so both carry the team id
(`T123:U456`): the same `U456` in two workspaces is two people to the core.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bots.slack_render import slack_to_plain
from core.messages import Incoming

PLATFORM = "slack"

# Subtypes that are a person writing something; everything else (joins, topic changes, bot
# messages, edits, deletions) is not a turn addressed to us.
_PERSON_SUBTYPES = {None, "", "file_share", "thread_broadcast"}


def scoped(team_id: str, slack_id: str) -> str:
    """A Slack id made unique across workspaces."""
    return f"{team_id}:{slack_id}"


def event_team(body: dict[str, Any], event: dict[str, Any]) -> str:
    """The workspace the app is installed in for this event (not a Slack Connect guest's)."""
    return str(body.get("team_id") or event.get("team") or event.get("user_team") or "")


def _ts_to_datetime(ts: str | None) -> datetime:
    try:
        return datetime.fromtimestamp(float(ts or ""), tz=UTC)
    except ValueError:
        return datetime.now(UTC)


def mentions(text: str, user_id: str | None) -> bool:
    return bool(user_id) and re.search(rf"<@{re.escape(user_id)}(?:\|[^>]*)?>", text or "") is not None


def command_text(text: str, known: Iterable[str]) -> str:
    """Normalize what a person typed as a command: `/confidante forget-me` and `forget-me`
    both become `/forget_me`; other text is returned unchanged.

    `known` holds the core's command names (without slash). A bare word is a command only when
    it is exactly one of them, so "memory is weird" stays a message.
    """
    stripped = text.strip()
    names = {k.lstrip("/").lower() for k in known}
    if stripped.startswith("/"):
        head, _, rest = stripped[1:].partition(" ")
        if head.lower() == "confidante":
            return slash_command_text(rest)
        name = head.lower().replace("-", "_")
        return f"/{name} {rest.strip()}".rstrip()
    head, _, rest = stripped.partition(" ")
    name = head.lower().replace("-", "_")
    if name in names and not rest.strip():
        return f"/{name}"
    return text


def slash_command_text(text: str) -> str:
    """`/confidante <sub> [args]` -> the core's `/<sub> [args]`; nothing -> `/help`."""
    head, _, rest = text.strip().partition(" ")
    if not head:
        return "/help"
    name = head.lower().lstrip("/").replace("-", "_")
    return f"/{name} {rest.strip()}".rstrip()


class ThreadMemory:
    """Threads the assistant takes part in (it was mentioned or it replied there), per channel.

    Bounded, and kept in a small file in the data dir when given one, so that after a restart
    replies in those threads still reach the assistant without a new mention.
    """

    def __init__(self, max_size: int = 20_000, path: Path | None = None) -> None:
        self._max = max_size
        self._path = path
        self._threads: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        if path is not None and path.exists():
            for line in path.read_text(encoding="utf-8").splitlines()[-max_size:]:
                parts = line.split("\t")
                if len(parts) == 3:
                    self._threads[(parts[0], parts[1], parts[2])] = None

    def add(self, team: str, channel: str, thread_ts: str) -> None:
        key = (team, channel, thread_ts)
        if key in self._threads:
            self._threads.move_to_end(key)
            return
        self._threads[key] = None
        while len(self._threads) > self._max:
            self._threads.popitem(last=False)
        if self._path is not None and not any("\t" in k or "\n" in k for k in key):
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with self._path.open("a", encoding="utf-8") as f:
                f.write("\t".join(key) + "\n")
            if self._path.stat().st_size > self._max * 80:  # compact: keep what is in memory
                self._path.write_text("".join("\t".join(k) + "\n" for k in self._threads), encoding="utf-8")

    def __contains__(self, key: tuple[str, str, str]) -> bool:
        return key in self._threads


def missing_field(body: dict[str, Any], event: dict[str, Any]) -> str | None:
    """The field a person's message event must carry and this one lacks (a broken or forged
    event), or None. Bots' and system messages (joins, edits, deletions) are not checked here."""
    if event.get("type") not in ("message", "app_mention"):
        return None
    if event.get("subtype") not in _PERSON_SUBTYPES or event.get("bot_id") or event.get("bot_profile"):
        return None
    for name in ("user", "channel", "ts"):
        if not isinstance(event.get(name), str) or not event.get(name):
            return f"event.{name}"
    if not event_team(body, event):
        return "team_id"
    return None


def to_incoming(
    body: dict[str, Any],
    event: dict[str, Any],
    *,
    bot_user_id: str | None,
    threads: ThreadMemory,
    known_commands: Iterable[str] = (),
) -> Incoming | None:
    """Map a `message` or `app_mention` event to an Incoming, or None when it is not a person's
    message we should see (bots, our own echoes, edits, channel joins...).

    In a channel, a message addresses the assistant when it mentions it (that arrives as an
    `app_mention`, so the duplicate `message` event is dropped here) or replies in a thread the
    assistant is part of; others are passed with `addressed=False` so the core can keep them
    as that channel's context.
    """
    etype = event.get("type")
    subtype = event.get("subtype")
    edited = False
    if subtype == "message_changed" and isinstance(event.get("message"), dict):
        inner = dict(event["message"])
        if inner.get("text") == (event.get("previous_message") or {}).get("text"):
            return None  # unfurls and other non-text changes
        inner.setdefault("channel", event.get("channel"))
        inner.setdefault("channel_type", event.get("channel_type"))
        event, subtype, edited = inner, inner.get("subtype"), True
    if subtype not in _PERSON_SUBTYPES:
        return None
    if event.get("bot_id") or event.get("bot_profile") or not event.get("user"):
        return None
    user = str(event["user"])
    if bot_user_id and user == bot_user_id:
        return None
    team = event_team(body, event)
    channel = str(event.get("channel") or "")
    ts = str(event.get("ts") or event.get("event_ts") or "")
    if not team or not channel or not ts:
        return None
    raw = str(event.get("text") or "")
    thread_ts = event.get("thread_ts")
    channel_type = event.get("channel_type") or ("im" if channel.startswith("D") else "channel")
    direct = channel_type == "im"

    if etype == "app_mention" or direct:
        addressed = True
    else:
        if mentions(raw, bot_user_id) and not edited:
            return None  # the app_mention event for the same message carries it
        in_thread = bool(thread_ts) and (
            (team, channel, str(thread_ts)) in threads
            or (bot_user_id is not None and event.get("parent_user_id") == bot_user_id)
        )
        addressed = in_thread

    text = slack_to_plain(raw, bot_user_id=bot_user_id)
    if direct or addressed:
        text = command_text(text, known_commands)
    return Incoming(
        platform=PLATFORM,
        chat_id=scoped(team, channel),
        workspace=team,
        sender_id=scoped(team, user),
        text=text,
        message_id=ts,
        chat_kind="direct" if direct else "group",
        # In a channel every exchange lives in a thread: a top-level mention starts one.
        thread_id=str(thread_ts) if thread_ts else (None if direct else ts),
        addressed=addressed,
        ts=_ts_to_datetime(ts),
        edited=edited,
    )
