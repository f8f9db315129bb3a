"""Speech to text with faster-whisper (CTranslate2) on the CPU.

Chosen by measurement (bench/speech_eval.py, 20 scripted OGG/Opus voice notes): Whisper tiny.en
in int8 had 12% word error rate at 0.17 CPU-seconds per audio second, ahead of multilingual Whisper
base (20%, 0.34) and pocketsphinx's en-us model (62%, 0.29).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from core.media.audio import Audio
from core.media.models import speech_model


@dataclass(frozen=True)
class Transcript:
    text: str
    seconds: float  # of audio
    avg_logprob: float  # mean per-token log-probability over the segments (0 = certain)

    @property
    def confidence(self) -> float:
        return math.exp(self.avg_logprob)

    def unsure(self, threshold: float) -> bool:
        return not self.text or self.avg_logprob < threshold


def transcribe_audio(audio: Audio, *, model_path: Path | None = None, threads: int = 2) -> Transcript:
    """Blocking: call it off the event loop (MediaReader does)."""
    model = speech_model(model_path, threads)
    segments, _info = model.transcribe(
        audio.samples,
        language="en",
        beam_size=1,
        condition_on_previous_text=False,
        vad_filter=False,
    )
    texts: list[str] = []
    weighted = 0.0
    tokens = 0
    for seg in segments:
        if seg.no_speech_prob > 0.8 and seg.avg_logprob < -1.0:
            continue  # Whisper hallucinating over silence
        texts.append(seg.text.strip())
        n = max(1, len(seg.tokens))
        weighted += seg.avg_logprob * n
        tokens += n
    text = " ".join(t for t in texts if t)
    return Transcript(text=text, seconds=audio.seconds, avg_logprob=weighted / tokens if tokens else -10.0)


def transcribe(
    data: bytes,
    mime: str = "audio/ogg",
    *,
    max_seconds: float | None = None,
    model_path: Path | None = None,
    threads: int = 2,
) -> Transcript:
    """Bytes of any audio format -> transcript. `mime` is informational: FFmpeg sniffs the container."""
    from core.media.audio import decode

    return transcribe_audio(decode(data, max_seconds=max_seconds), model_path=model_path, threads=threads)
