"""Text from the outside world made safe to store, embed and tokenize, without losing it."""

from __future__ import annotations

import unicodedata


def clean(text: str | bytes | None) -> str:
    """Valid UTF-8, NFC, no NUL: lone surrogates and undecodable bytes become U+FFFD."""
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = text.encode("utf-8", errors="surrogatepass").decode("utf-8", errors="replace")
    text = text.replace("\x00", "\ufffd")
    return unicodedata.normalize("NFC", text)


def preview(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
