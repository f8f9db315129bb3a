"""A short description of a photo from a vision model on the generation server, when one is set.

OpenAI-compatible servers (vLLM, llama.cpp's server) take images as `image_url` parts with a
data: URL in /v1/chat/completions. Without CONFIDANTE_VISION_MODEL nothing is sent anywhere and a
photo is only its caption and the text read in it. The image goes to the server the operator runs,
in the request body only; the server is expected to keep nothing.
"""

from __future__ import annotations

import base64
import io

import httpx
import structlog
from PIL import Image

from core.config import Settings
from core.llm.served_adapters import auth_headers, server_root

log = structlog.get_logger(__name__)

PROMPT = "Describe this picture in one or two plain sentences, for someone who cannot see it."
MAX_SIDE = 1024


def _jpeg_data_url(data: bytes) -> str:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    img.thumbnail((MAX_SIDE, MAX_SIDE))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def describe(data: bytes, settings: Settings) -> str | None:
    """The description, or None when no vision model is set or the server cannot answer. Blocking."""
    if not settings.vision_model or not settings.generation_url:
        return None
    body = {
        "model": settings.vision_model,
        "max_tokens": 96,
        "temperature": 0.0,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": PROMPT},
                    {"type": "image_url", "image_url": {"url": _jpeg_data_url(data)}},
                ],
            }
        ],
    }
    url = server_root(settings.generation_url) + "/v1/chat/completions"
    try:
        resp = httpx.post(url, json=body, headers=auth_headers(settings), timeout=60)
        resp.raise_for_status()
        text = resp.json()["choices"][0]["message"]["content"]
    except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
        log.warning("media.vision_failed", error=type(exc).__name__)
        return None
    return " ".join(str(text).split()) or None
