"""Telegram voice notes, audio files and photos -> the text of a message (core/media reads them).

The file is fetched with getFile and downloaded into memory; nothing is written to disk. In a
group only media addressed to the bot (a reply to it, or a caption mentioning it) are read:
transcribing every voice note of a busy group would cost CPU for nothing the bot answers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import structlog
from telegram import Bot, Message
from telegram.error import TelegramError

from bots.telegram_incoming import BotIdentity, to_incoming
from core.media.reader import Kind, Media, MediaReader, placeholder
from core.messages import Incoming

log = structlog.get_logger(__name__)

PLATFORM = "telegram"
DOWNLOAD_FAILED = "I couldn't download that file from Telegram. Could you send it again?"


@dataclass(frozen=True)
class Attachment:
    kind: Kind
    file_id: str
    size: int | None
    seconds: float | None
    mime: str


def attachment(message: Message) -> Attachment | None:
    """The voice note, audio or image this message carries, if any."""
    if message.voice is not None:
        v = message.voice
        return Attachment("voice", v.file_id, v.file_size, float(v.duration or 0), v.mime_type or "audio/ogg")
    if message.audio is not None:
        a = message.audio
        return Attachment("audio", a.file_id, a.file_size, float(a.duration or 0), a.mime_type or "")
    if message.photo:
        best = max(message.photo, key=lambda p: p.width * p.height)
        return Attachment("image", best.file_id, best.file_size, None, "image/jpeg")
    doc = message.document
    if doc is not None and (doc.mime_type or "").startswith(("image/", "audio/")):
        kind: Kind = "image" if doc.mime_type.startswith("image/") else "audio"  # type: ignore[union-attr]
        return Attachment(kind, doc.file_id, doc.file_size, None, doc.mime_type or "")
    return None


async def download(bot: Bot, item: Attachment) -> bytes:
    """The file's bytes, in memory."""
    tg_file = await bot.get_file(item.file_id)
    return bytes(await tg_file.download_as_bytearray())


@dataclass(frozen=True)
class Intake:
    """What to do with a media message: say `notice` first (if any), then answer `incoming` (if any)."""

    incoming: Incoming | None
    notice: str | None = None


async def intake(
    bot: Bot,
    message: Message,
    item: Attachment,
    reader: MediaReader,
    me: BotIdentity,
    commands: frozenset[str] = frozenset(),
) -> Intake:
    """Download and read one attachment; refusals (too big, too long, unreadable) come back as `notice`."""
    base = to_incoming(message, me, commands=commands, text="")
    if base.incoming is None:
        return Intake(None)
    if not base.incoming.addressed:  # a group's media not meant for us: not read, the caption kept
        kept = placeholder(item.kind, base.incoming.text)
        return Intake(replace(base.incoming, text=kept) if kept else None)
    refusal = reader.refuse_size(PLATFORM, item.kind, item.size) or (
        reader.refuse_duration(PLATFORM, item.seconds) if item.kind != "image" else None
    )
    if refusal:
        log.info("telegram.media_refused", chat_id=message.chat_id, kind=item.kind, bytes=item.size)
        return Intake(None, refusal)
    try:
        data = await download(bot, item)
    except TelegramError as exc:
        log.warning("telegram.media_download_failed", chat_id=message.chat_id, error=type(exc).__name__)
        return Intake(None, DOWNLOAD_FAILED)
    reading = await reader.read(PLATFORM, Media(item.kind, data, item.mime, caption=base.incoming.text))
    del data  # the bytes are done with: only the text goes on
    if reading.text is None:
        return Intake(None, reading.notice)
    return Intake(replace(base.incoming, text=reading.text), reading.notice)
