"""Turn a voice note or a photo into the text of an ordinary message.

The transcript *is* the message: "(voice note) …" is stored, recalled and consolidated like text
and shows up that way in /memory. A photo becomes "(photo) caption + the text read in it".
The work runs in a thread behind a semaphore: a long voice note occupies at most
`media_concurrency` threads, and everyone else's text replies go on in the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog

from core.config import Settings
from core.media.audio import AudioError, TooLong, decode
from core.media.ocr import ImageError, read_text
from core.media.speech import transcribe_audio
from core.media.vision import describe

log = structlog.get_logger(__name__)

Kind = Literal["voice", "audio", "image"]

VOICE_PREFIX = "(voice note)"
PHOTO_PREFIX = "(photo)"

TOO_BIG = "That {what} is {size:.1f} MB; I can take up to {cap:.0f} MB. Could you send a smaller one or type the gist?"
TOO_LONG = (
    "That voice note is longer than I can listen to ({cap}). Could you split it into shorter ones "
    "or type the gist?"
)
UNPLAYABLE = "I couldn't play that voice note (the file seems damaged). Could you send it again or type it?"
UNREADABLE_IMAGE = "I couldn't open that image. Could you send it again as a photo?"
NOTHING_HEARD = "I couldn't make out any words in that voice note. Could you try again or type it?"
NOTHING_SEEN = (
    "I couldn't find any text in that photo, and I can't describe pictures here. "
    "Add a caption or tell me what it shows."
)
UNSURE = 'I\'m not sure I heard that right. I understood: "{text}"'
FAILED = "Something went wrong while I was reading that. Please try again, or type it."


@dataclass(frozen=True)
class Media:
    """One attachment as a channel downloaded it (bytes in memory only)."""

    kind: Kind
    data: bytes
    mime: str = ""
    caption: str = ""


@dataclass(frozen=True)
class Reading:
    """`text` is the message for the core (None: nothing to answer, only `notice`).
    `notice` is said to the person first: a refusal, or what was heard when unsure."""

    text: str | None
    notice: str | None = None


def placeholder(kind: Kind, caption: str) -> str | None:
    """An attachment kept without reading it (a group's media not addressed to us): the caption
    with what it came with, or None when there is no caption to keep."""
    caption = caption.strip()
    if not caption:
        return None
    return f"{PHOTO_PREFIX if kind == 'image' else VOICE_PREFIX} {caption}"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} minutes" if seconds >= 120 else f"{seconds:.0f} seconds"


class MediaReader:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._slots = asyncio.Semaphore(max(1, settings.media_concurrency))

    def refuse_size(self, platform: str, kind: Kind, size: int | None) -> str | None:
        """The reply for a file over the platform's cap, before anything is downloaded."""
        if size is None:
            return None
        cap = self.settings.media_bytes_cap(platform, "image" if kind == "image" else "audio")
        if size <= cap:
            return None
        what = "image" if kind == "image" else "voice note" if kind == "voice" else "audio file"
        return TOO_BIG.format(what=what, size=size / 1e6, cap=cap / 1e6)

    def refuse_duration(self, platform: str, seconds: float | None) -> str | None:
        """The reply for a voice note the platform says is over the cap (decoding also checks)."""
        cap = self.settings.audio_seconds_cap(platform)
        if seconds is None or seconds <= cap:
            return None
        return TOO_LONG.format(cap=_duration(cap))

    async def read(self, platform: str, media: Media) -> Reading:
        """Blocking work in a thread, at most `media_concurrency` at once."""
        refusal = self.refuse_size(platform, media.kind, len(media.data))
        if refusal:
            return Reading(None, refusal)
        async with self._slots:
            started = time.perf_counter()
            try:
                if media.kind == "image":
                    reading = await asyncio.to_thread(self._read_image, media)
                else:
                    reading = await asyncio.to_thread(self._read_audio, platform, media)
            except Exception:
                log.exception("media.read_failed", platform=platform, kind=media.kind)
                return Reading(None, FAILED)
        log.info(
            "media.read",
            platform=platform,
            kind=media.kind,
            bytes=len(media.data),
            seconds=round(time.perf_counter() - started, 3),
            ok=reading.text is not None,
        )
        return reading

    def _read_audio(self, platform: str, media: Media) -> Reading:
        cap = self.settings.audio_seconds_cap(platform)
        try:
            audio = decode(media.data, max_seconds=cap)
        except TooLong:
            return Reading(None, TOO_LONG.format(cap=_duration(cap)))
        except AudioError:
            return Reading(None, UNPLAYABLE)
        heard = transcribe_audio(
            audio, model_path=self.settings.speech_model_path, threads=self.settings.speech_threads
        )
        caption = media.caption.strip()
        if not heard.text and not caption:
            return Reading(None, NOTHING_HEARD)
        body = " ".join(p for p in (caption, heard.text) if p)
        unsure = heard.text and heard.unsure(self.settings.speech_unsure_logprob)
        notice = UNSURE.format(text=heard.text) if unsure else None
        return Reading(f"{VOICE_PREFIX} {body}", notice)

    def _read_image(self, media: Media) -> Reading:
        try:
            seen = read_text(media.data)
        except ImageError:
            return Reading(None, UNREADABLE_IMAGE)
        caption = media.caption.strip()
        described = describe(media.data, self.settings)
        if not seen and not caption and not described:
            return Reading(None, NOTHING_SEEN)
        parts = [caption] if caption else []
        if described:
            parts.append("It shows: " + described)
        if seen:
            parts.append("Text in it: " + " / ".join(seen.splitlines()))
        return Reading(f"{PHOTO_PREFIX} " + "\n".join(parts))


def reader_for_import(settings: Settings) -> Callable[[str, Path], str | None]:
    """For `confidante import --read-media`: a voice note's transcript or a photo's text, from a file
    in the export (read, never copied). Blocking: the import runs in its own process."""

    def read(kind: str, path: Path) -> str | None:
        data = path.read_bytes()
        if kind == "photo":
            if len(data) > settings.media_max_image_bytes:
                return None
            try:
                seen = read_text(data)
            except ImageError:
                return None
            return ("Text in it: " + " / ".join(seen.splitlines())) if seen else None
        try:
            audio = decode(data, max_seconds=settings.media_max_audio_seconds)
        except (AudioError, TooLong):
            return None
        heard = transcribe_audio(
            audio, model_path=settings.speech_model_path, threads=settings.speech_threads
        )
        return heard.text or None

    return read
