"""Generated test media for the speech and OCR evaluations and the tests: scripted English speech
(espeak-ng, Debian's package) encoded as OGG/Opus like a Telegram voice note, and text images
(Pillow) at several sizes and angles. All in memory; espeak-ng writes WAV to a pipe."""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
from dataclasses import dataclass

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

# what people tell a personal assistant in voice notes: names, places, times, numbers
SCRIPT = [
    "Remind me to call my sister Ingrid on Sunday evening.",
    "My dentist appointment moved to Thursday at half past three.",
    "I parked the car on level four near the blue elevator.",
    "The wifi password at the cabin is written on the fridge.",
    "Please remember that my son is allergic to peanuts.",
    "We are flying to Lisbon on the twelfth of March.",
    "I finished the first draft of the quarterly report today.",
    "Buy milk, eggs, bread and a bag of coffee beans.",
    "My neighbour Tom is looking after the plants while we are away.",
    "The meeting with the landlord is on Friday morning at nine.",
    "I started running again and did five kilometres this morning.",
    "Our anniversary dinner is booked at the Italian place downtown.",
    "Send the invoice to the accounting team before the end of the month.",
    "I lent my green umbrella to Maria last week.",
    "The kids have a school trip to the science museum tomorrow.",
    "My passport expires in November so I need to renew it soon.",
    "I want to read more books this year, maybe one every month.",
    "The plumber said the kitchen sink will be fixed on Tuesday.",
    "Can you keep track of how much water I drink each day?",
    "My favourite tea is jasmine green tea with a little honey.",
]
VOICES = ["en-us", "en-gb", "en-us+f3", "en-gb+m3"]  # espeak-ng voice+variant
SPEEDS = [150, 175]  # words per minute


@dataclass(frozen=True)
class Clip:
    text: str
    voice: str
    speed: int
    ogg: bytes
    seconds: float


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def spoken_wav(text: str, voice: str, speed: int) -> bytes:
    return subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
        check=True,
        capture_output=True,
    ).stdout


def pcm_of(data: bytes) -> tuple[np.ndarray, int]:
    """Mono int16 samples and the rate, decoded with PyAV."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        frames = [f.to_ndarray() for f in container.decode(stream)]
        rate = stream.rate
    pcm = np.concatenate([f.reshape(f.shape[0], -1)[0] if f.ndim == 2 else f for f in frames])
    return pcm.astype(np.int16), rate


def to_ogg_opus(pcm: np.ndarray, rate: int) -> bytes:
    """Mono int16 PCM -> OGG/Opus at 48 kHz, as Telegram voice notes and Matrix voice messages are."""
    out = io.BytesIO()
    with av.open(out, mode="w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=48000, layout="mono")
        stream.bit_rate = 32000
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.rate = rate
        for chunk in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


@functools.lru_cache(maxsize=256)
def voice_note(text: str, voice: str = "en-us", speed: int = 160, pad_seconds: float = 0.0) -> Clip:
    """`text` spoken by espeak-ng as an OGG/Opus voice note; `pad_seconds` of silence after it."""
    pcm, rate = pcm_of(spoken_wav(text, voice, speed))
    if pad_seconds:
        pcm = np.concatenate([pcm, np.zeros(int(pad_seconds * rate), dtype=np.int16)])
    return Clip(text, voice, speed, to_ogg_opus(pcm, rate), len(pcm) / rate)


def scripted_set(limit: int | None = None) -> list[Clip]:
    """Each script line once, cycling through voices and speeds."""
    lines = SCRIPT[:limit] if limit else SCRIPT
    return [
        voice_note(t, VOICES[i % len(VOICES)], SPEEDS[(i // len(VOICES)) % len(SPEEDS)])
        for i, t in enumerate(lines)
    ]


def _font(size: int) -> ImageFont.ImageFont:
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def text_image(lines: list[str], *, size: int = 28, angle: float = 0.0, fmt: str = "PNG") -> bytes:
    """Dark text on a light background, rotated by `angle` degrees, as image bytes."""
    font = _font(size)
    pad = size
    widths = [font.getbbox(line)[2] for line in lines]
    height = int(len(lines) * size * 1.5) + 2 * pad
    img = Image.new("RGB", (max(widths) + 2 * pad, height), (250, 250, 245))
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((pad, pad + int(i * size * 1.5)), line, fill=(20, 20, 20), font=font)
    if angle:
        img = img.rotate(angle, expand=True, fillcolor=(250, 250, 245), resample=Image.BICUBIC)
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()
