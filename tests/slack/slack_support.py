"""What the Slack tests share: settings pointing at the local Slack, signing, event builders
and a counting wrapper for the real engine (the core double is tests/channel_fakes.py)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from bots.settings import ChannelSettings
from tests.slack.fake_slack import FakeSlack

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TOKEN = "xoxb-111-test-token"
TEAM = "T111"
BOT_USER = "UBOT111"
APP_TOKEN = "xapp-1-test"
# what the shared ScriptedAssistant answers in the Slack tests: Markdown and characters to escape
ANSWER = "Hello **there** & <you>"


def slack_settings(
    tmp_path: Path, fake: FakeSlack, *, slack: dict[str, Any] | None = None, **overrides: Any
) -> ChannelSettings:
    """Settings for a bot on the fake Slack; `slack` changes fields of its section."""
    section: dict[str, Any] = {
        "bot_token": TOKEN,
        "signing_secret": SIGNING_SECRET,
        "api_url": fake.api_url,
        "http_port": 0,
        "update_interval": 0.05,
        **(slack or {}),
    }
    return ChannelSettings(data_dir=tmp_path / "data", slack=section, **overrides)


def sign(body: bytes, timestamp: int, secret: str = SIGNING_SECRET) -> str:
    """Slack's v0 request signature, computed here independently of bolt."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def event_body(event: dict[str, Any], *, team: str = TEAM, event_id: str = "Ev001") -> dict[str, Any]:
    return {
        "token": "legacy-verification-token",
        "team_id": team,
        "api_app_id": "A0TEST",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "authorizations": [{"team_id": team, "user_id": BOT_USER, "is_bot": True}],
    }


def dm_event(
    text: str, *, ts: str = "1700000100.000100", user: str = "U1", channel: str = "D1", **extra: Any
) -> dict[str, Any]:
    return {
        "type": "message",
        "channel": channel,
        "user": user,
        "text": text,
        "ts": ts,
        "event_ts": ts,
        "channel_type": "im",
        **extra,
    }


def mention_event(
    text: str, *, ts: str = "1700000200.000200", user: str = "U1", channel: str = "C1", **extra: Any
) -> dict[str, Any]:
    return {
        "type": "app_mention",
        "channel": channel,
        "user": user,
        "text": f"<@{BOT_USER}> {text}",
        "ts": ts,
        "event_ts": ts,
        **extra,
    }


async def post_signed(
    url: str,
    payload: dict[str, Any] | str,
    *,
    timestamp: int | None = None,
    secret: str = SIGNING_SECRET,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> tuple[int, str, float]:
    """POST a body signed as Slack signs it; returns status, body text and seconds to answer."""
    body = (json.dumps(payload) if not isinstance(payload, str) else payload).encode()
    ts = int(time.time()) if timestamp is None else timestamp
    all_headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": sign(body, ts, secret),
        **(headers or {}),
    }
    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        async with session.post(url, data=body, headers=all_headers) as resp:
            text = await resp.text()
            return resp.status, text, time.perf_counter() - start


class CountingEngine:
    """The real engine (core.llm.engine.Engine on the tiny random Llama), wrapped to keep every
    prompt and answer, count finished generations, and optionally be slow: `delay` seconds
    before each delta stands in for a big model on a small machine."""

    def __init__(self, engine: Any, delay: float = 0.0) -> None:
        self.engine = engine
        self.delay = delay
        self.context_tokens = engine.context_tokens
        self.accepts_prefix = getattr(engine, "accepts_prefix", False)  # grounded replies (core/grounding.py)
        self.prompts: list[list[dict[str, str]]] = []
        self.outputs: list[str] = []
        self.first_at: list[float] = []  # time.monotonic() of each generation's first text
        self.finished = 0

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    async def stream(self, messages: list[dict[str, str]], **kwargs: Any) -> AsyncIterator[str]:
        self.prompts.append(messages)
        parts: list[str] = []
        async for delta in self.engine.stream(messages, **kwargs):
            if self.delay:
                await asyncio.sleep(self.delay)
            if delta.strip() and not any(p.strip() for p in parts):
                self.first_at.append(time.monotonic())
            parts.append(delta)
            yield delta
        self.outputs.append("".join(parts))
        self.finished += 1

    def prompt_text(self, index: int = -1) -> str:
        return "\n".join(m["content"] for m in self.prompts[index])
