"""Matrix m.audio (voice messages included) and m.image -> the text of a message.

Plain attachments are downloaded from the homeserver's authenticated media API; attachments in an
encrypted room are decrypted in memory with the key carried by the (already decrypted) event
(AES-CTR + SHA-256, the Matrix attachment scheme). Neither the ciphertext nor the plaintext is
written anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import structlog
from nio import (
    AsyncClient,
    DownloadError,
    RoomEncryptedAudio,
    RoomEncryptedImage,
    RoomMessageAudio,
    RoomMessageImage,
)
from nio.crypto.attachments import decrypt_attachment
from nio.exceptions import EncryptionError

from core.media.reader import Kind, Media, MediaReader, placeholder
from core.messages import Incoming

log = structlog.get_logger(__name__)

PLATFORM = "matrix"
MEDIA_EVENTS = (RoomMessageAudio, RoomMessageImage, RoomEncryptedAudio, RoomEncryptedImage)
MediaEvent = RoomMessageAudio | RoomMessageImage | RoomEncryptedAudio | RoomEncryptedImage
DOWNLOAD_FAILED = "I couldn't download that file from the homeserver. Could you send it again?"
UNDECRYPTABLE = "I couldn't decrypt that file. Could you send it again?"


@dataclass(frozen=True)
class Attachment:
    kind: Kind
    url: str
    size: int | None
    seconds: float | None
    mime: str
    caption: str
    encryption: dict[str, Any] | None  # key, hashes, iv of an encrypted file


def attachment(event: MediaEvent) -> Attachment:
    content = event.source.get("content", {})
    info = content.get("info") if isinstance(content.get("info"), dict) else {}
    kind: Kind = "image" if isinstance(event, RoomMessageImage | RoomEncryptedImage) else "voice"
    duration = info.get("duration")
    voice = content.get("org.matrix.msc1767.audio")
    if duration is None and isinstance(voice, dict):
        duration = voice.get("duration")
    # MSC2530: with a separate filename, the body is a caption
    filename = content.get("filename")
    caption = event.body if filename and filename != event.body else ""
    encryption = None
    if isinstance(event, RoomEncryptedAudio | RoomEncryptedImage):
        encryption = {"key": event.key, "hashes": event.hashes, "iv": event.iv}
    return Attachment(
        kind=kind,
        url=event.url,
        size=info.get("size") if isinstance(info.get("size"), int) else None,
        seconds=duration / 1000 if isinstance(duration, int | float) else None,
        mime=str(info.get("mimetype") or getattr(event, "mimetype", "") or ""),
        caption=caption,
        encryption=encryption,
    )


async def download(client: AsyncClient, item: Attachment) -> bytes | None:
    """The file's plaintext in memory, or None when it cannot be had (logged without content)."""
    resp = await client.download(mxc=item.url)
    if isinstance(resp, DownloadError) or not hasattr(resp, "body"):
        log.warning("matrix.media_download_failed", status=getattr(resp, "status_code", None))
        return None
    data = resp.body
    if item.encryption is None:
        return data
    enc = item.encryption
    return decrypt_attachment(data, enc["key"]["k"], enc["hashes"]["sha256"], enc["iv"])


@dataclass(frozen=True)
class Intake:
    incoming: Incoming | None
    notice: str | None = None


async def intake(client: AsyncClient, incoming: Incoming, item: Attachment, reader: MediaReader) -> Intake:
    """Download (and decrypt) one attachment and read it; `incoming` is the event as text."""
    if not incoming.addressed:  # a group's media not meant for us: not read, the caption kept
        kept = placeholder(item.kind, item.caption)
        return Intake(replace(incoming, text=kept) if kept else None)
    refusal = reader.refuse_size(PLATFORM, item.kind, item.size) or (
        reader.refuse_duration(PLATFORM, item.seconds) if item.kind != "image" else None
    )
    if refusal:
        return Intake(None, refusal)
    try:
        data = await download(client, item)
    except (EncryptionError, KeyError, TypeError) as exc:  # a bad key or a hash mismatch
        log.warning("matrix.media_decrypt_failed", error=type(exc).__name__)
        return Intake(None, UNDECRYPTABLE)
    if data is None:
        return Intake(None, DOWNLOAD_FAILED)
    reading = await reader.read(PLATFORM, Media(item.kind, data, item.mime, caption=item.caption))
    del data
    if reading.text is None:
        return Intake(None, reading.notice)
    return Intake(replace(incoming, text=reading.text), reading.notice)
