"""Decode any audio a chat platform sends (OGG/Opus, M4A, MP3, WAV) with PyAV's bundled FFmpeg.

Everything stays in memory: the bytes are read from a BytesIO, never from a file, so a voice note
is never written to disk.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np

SAMPLE_RATE = 16_000  # what the speech models expect


class AudioError(ValueError):
    """The bytes are not audio we can decode."""


class TooLong(ValueError):
    """The audio runs past the cap; `seconds` is how far decoding got before stopping."""

    def __init__(self, seconds: float, cap: float) -> None:
        super().__init__(f"audio longer than {cap:.0f} s")
        self.seconds = seconds
        self.cap = cap


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # float32 mono at SAMPLE_RATE, in [-1, 1]

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def decode(data: bytes, *, max_seconds: float | None = None) -> Audio:
    """16 kHz mono float32 samples; stops early (TooLong) past `max_seconds` so a huge file costs little."""
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError) as exc:
        raise AudioError("not a readable audio file") from exc
    chunks: list[np.ndarray] = []
    total = 0
    limit = int(max_seconds * SAMPLE_RATE) if max_seconds else None
    try:
        if not container.streams.audio:
            raise AudioError("the file has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunk = out.to_ndarray().reshape(-1)
                chunks.append(chunk)
                total += len(chunk)
            if limit is not None and total > limit:
                raise TooLong(total / SAMPLE_RATE, max_seconds or 0.0)
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as exc:
        raise AudioError("the audio is damaged") from exc
    finally:
        container.close()
    if not chunks:
        raise AudioError("the audio is empty")
    samples = np.concatenate(chunks).astype(np.float32) / 32768.0
    return Audio(samples)
