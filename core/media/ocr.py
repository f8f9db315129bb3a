"""Text in images (receipts, whiteboards, screenshots), read offline with RapidOCR's bundled models."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.media.models import ocr_engine

MAX_SIDE = 2048  # larger photos are scaled down first: OCR time grows with pixels, accuracy barely


class ImageError(ValueError):
    """The bytes are not an image we can read."""


def load_image(data: bytes) -> np.ndarray:
    """RGB pixels, EXIF rotation applied (phone photos), never touching the disk."""
    try:
        img = Image.open(io.BytesIO(data))
        img = ImageOps.exif_transpose(img).convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ImageError("not a readable image") from exc
    if max(img.size) > MAX_SIDE:
        img.thumbnail((MAX_SIDE, MAX_SIDE))
    return np.asarray(img)[:, :, ::-1].copy()  # BGR, as OpenCV-based OCR expects


def read_text(data: bytes) -> str:
    """The text in the image, lines top to bottom; "" when there is none. Blocking."""
    pixels = load_image(data)
    result = ocr_engine()(pixels)
    lines = _lines(result)
    return "\n".join(lines)


def _lines(result: object) -> list[str]:
    """RapidOCR's result across versions: an object with .txts (3.x) or a (list, elapsed) tuple (1.x)."""
    txts = getattr(result, "txts", None)
    if txts is not None:
        return [t.strip() for t in txts if t and t.strip()]
    if isinstance(result, tuple) and result and result[0]:
        return [item[1].strip() for item in result[0] if item[1].strip()]
    return []
