"""Slack audio clips and image files -> the text of a message (core/media reads them).

A file shared in a message carries `url_private_download`; it is fetched with the workspace's
bot token (scope `files:read`) into memory, never to disk. The token is only ever sent to
Slack's file host (or the configured API host, for a local Slack in tests).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from bots.settings import ChannelSettings
from core.media.reader import Kind, Media, MediaReader, placeholder
from core.messages import Incoming

log = structlog.get_logger(__name__)

PLATFORM = "slack"
SLACK_FILE_HOSTS = {"files.slack.com"}
DOWNLOAD_FAILED = "I couldn't download that file from Slack (the app may need the files:read scope)."


@dataclass(frozen=True)
class SlackFile:
    kind: Kind
    url: str
    size: int | None
    seconds: float | None
    mime: str


def media_file(event: dict[str, Any]) -> SlackFile | None:
    """The first audio clip or image shared in this message event, if any."""
    for f in event.get("files") or []:
        if not isinstance(f, dict):
            continue
        mime = str(f.get("mimetype") or "")
        url = f.get("url_private_download") or f.get("url_private")
        if not url or not mime.startswith(("audio/", "image/", "video/")):
            continue
        if mime.startswith("video/") and f.get("subtype") != "slack_audio":
            continue  # a video clip, not a voice clip
        kind: Kind = "image" if mime.startswith("image/") else "voice"
        duration = f.get("duration_ms")
        seconds = float(duration) / 1000 if isinstance(duration, int | float) else None
        size = f.get("size") if isinstance(f.get("size"), int) else None
        return SlackFile(kind, str(url), size, seconds, mime)
    return None


def _allowed(url: str, settings: ChannelSettings) -> bool:
    host = urlsplit(url).hostname or ""
    hosts = set(SLACK_FILE_HOSTS)
    if settings.slack.api_url:
        hosts.add(urlsplit(settings.slack.api_url).hostname or "")
    return urlsplit(url).scheme in ("https", "http") and host in hosts


async def download(url: str, token: str, cap: int) -> bytes:
    """The file's bytes in memory; stops reading past `cap` (ValueError)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(timeout=60, follow_redirects=False) as http,
        http.stream("GET", url, headers=headers) as resp,
    ):
        resp.raise_for_status()
        if "text/html" in resp.headers.get("content-type", ""):
            raise httpx.HTTPError("Slack answered with a login page: the token lacks files:read")
        chunks, total = [], 0
        async for chunk in resp.aiter_bytes():
            total += len(chunk)
            if total > cap:
                raise ValueError("file over the cap")
            chunks.append(chunk)
        return b"".join(chunks)


@dataclass(frozen=True)
class Intake:
    incoming: Incoming | None
    notice: str | None = None


async def intake(
    msg: Incoming, item: SlackFile, token: str, reader: MediaReader, settings: ChannelSettings
) -> Intake:
    """Download and read one file shared in `msg`; the message's own text is the caption."""
    if not msg.addressed:  # a channel's media not meant for us: not read, the caption kept
        kept = placeholder(item.kind, msg.text)
        return Intake(replace(msg, text=kept) if kept else None)
    refusal = reader.refuse_size(PLATFORM, item.kind, item.size) or (
        reader.refuse_duration(PLATFORM, item.seconds) if item.kind != "image" else None
    )
    if refusal:
        return Intake(None, refusal)
    if not _allowed(item.url, settings):
        log.warning("slack.media_host_refused", host=urlsplit(item.url).hostname)
        return Intake(None, DOWNLOAD_FAILED)
    cap = settings.media_bytes_cap(PLATFORM, "image" if item.kind == "image" else "audio")
    try:
        data = await download(item.url, token, cap)
    except ValueError:
        return Intake(None, reader.refuse_size(PLATFORM, item.kind, cap + 1))
    except httpx.HTTPError as exc:
        log.warning("slack.media_download_failed", error=type(exc).__name__)
        return Intake(None, DOWNLOAD_FAILED)
    reading = await reader.read(PLATFORM, Media(item.kind, data, item.mime, caption=msg.text))
    del data
    if reading.text is None:
        return Intake(None, reading.notice)
    return Intake(replace(msg, text=reading.text), reading.notice)
