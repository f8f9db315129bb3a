"""core/media on real models: the bundled Whisper tiny.en via PyAV, RapidOCR's bundled models;
refusals for bad, big and long input; work off the event loop with a bound on concurrency."""

from __future__ import annotations

import asyncio
import threading
import time

import core.media.reader as reader_mod
from core.config import Settings
from core.media.reader import (
    NOTHING_SEEN,
    TOO_LONG,
    UNPLAYABLE,
    UNREADABLE_IMAGE,
    Media,
    MediaReader,
)
from core.media.speech import transcribe
from tests.media.conftest import RECEIPT


def test_a_voice_note_is_transcribed(sister_note: bytes):
    heard = transcribe(sister_note, "audio/ogg")
    assert "norway" in heard.text.lower() and "sister" in heard.text.lower()
    assert 1.5 < heard.seconds < 10


async def test_reader_makes_the_message_text(sister_note: bytes, receipt_png: bytes, tmp_path):
    reader = MediaReader(Settings(data_dir=tmp_path))
    voice = await reader.read("telegram", Media("voice", sister_note, "audio/ogg"))
    assert voice.text is not None and voice.text.startswith("(voice note) ")
    assert "Norway" in voice.text
    photo = await reader.read("telegram", Media("image", receipt_png, "image/png", caption="my receipt"))
    assert photo.text is not None and photo.text.startswith("(photo) my receipt")
    assert "4721" in photo.text and "58.40" in photo.text


async def test_bad_long_and_empty_media_get_a_clear_reply(sister_note: bytes, tmp_path):
    from bench.media_data import text_image

    reader = MediaReader(Settings(data_dir=tmp_path, media_max_audio_seconds_by_platform={"slack": 1.0}))
    long = await reader.read("slack", Media("voice", sister_note))
    assert long.text is None and long.notice == TOO_LONG.format(cap="1 seconds")
    bad = await reader.read("slack", Media("voice", b"OggS" + b"\x00garbage" * 50))
    assert bad.text is None and bad.notice == UNPLAYABLE
    not_image = await reader.read("slack", Media("image", b"\x89PNG not really"))
    assert not_image.text is None and not_image.notice == UNREADABLE_IMAGE
    blank = await reader.read("slack", Media("image", text_image([" "], size=20)))
    assert blank.text is None and blank.notice == NOTHING_SEEN
    small = MediaReader(Settings(data_dir=tmp_path, media_max_bytes_by_platform={"slack": 1000}))
    big = await small.read("slack", Media("voice", sister_note))
    assert big.text is None and "MB" in (big.notice or "")


async def test_reading_runs_off_the_loop_and_at_most_n_at_once(sister_note: bytes, tmp_path, monkeypatch):
    running, peak = 0, 0
    lock = threading.Lock()
    real = reader_mod.transcribe_audio

    def counted(*a, **kw):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.3)  # hold the slot long enough for the other read to queue behind it
            return real(*a, **kw)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(reader_mod, "transcribe_audio", counted)
    reader = MediaReader(Settings(data_dir=tmp_path, media_concurrency=1))
    ticks = 0

    async def other_people() -> None:  # stands for text replies served meanwhile
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(other_people())
    results = await asyncio.gather(*(reader.read("matrix", Media("voice", sister_note)) for _ in range(2)))
    ticker.cancel()
    assert all(r.text and "Norway" in r.text for r in results)
    assert peak == 1, "media_concurrency=1 lets one transcription run at a time"
    assert ticks > 20, "the event loop kept running while the voice notes were transcribed"


def test_receipt_text_reads_back(receipt_png: bytes):
    from core.media.ocr import read_text

    text = read_text(receipt_png)
    assert RECEIPT[0] in text and "58.40" in text


async def test_a_vision_model_on_the_generation_server_describes_the_photo(receipt_png: bytes, tmp_path):
    """A stand-in for an OpenAI-compatible server with a vision model (none runs on CPU here),
    answering /v1/chat/completions as vLLM does; it checks the picture arrived as a JPEG data URL."""
    import base64
    import io

    from aiohttp import web
    from PIL import Image

    seen: list[dict] = []

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        [part] = [p for p in body["messages"][0]["content"] if p["type"] == "image_url"]
        head, _, b64 = part["image_url"]["url"].partition(",")
        assert head == "data:image/jpeg;base64"
        assert Image.open(io.BytesIO(base64.b64decode(b64))).format == "JPEG"
        return web.json_response(
            {"choices": [{"message": {"role": "assistant", "content": "A paper receipt."}}]}
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        settings = Settings(
            data_dir=tmp_path, generation_url=f"http://127.0.0.1:{port}/v1", vision_model="a-vlm"
        )
        photo = await MediaReader(settings).read("matrix", Media("image", receipt_png))
        without = await MediaReader(Settings(data_dir=tmp_path)).read("matrix", Media("image", receipt_png))
    finally:
        await runner.cleanup()
    assert photo.text is not None and "It shows: A paper receipt." in photo.text and "4721" in photo.text
    assert [b["model"] for b in seen] == ["a-vlm"]
    assert without.text is not None and "It shows" not in without.text
