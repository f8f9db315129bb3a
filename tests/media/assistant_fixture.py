"""Build the real Assistant (LanceDB files, the real embedder, the tiny random Llama) as
`confidante run` does; a new call is a new process with the same data dir."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from core.assistant import build_assistant
from core.config import Settings
from core.llm.engine import Engine
from tests.helpers import RecordingEngine

MAGICS = (b"OggS", b"OpusHead", b"\x89PNG", b"\xff\xd8\xff", b"fLaC", b"ID3")


def builder(tiny_model: Any) -> Iterator[Callable[[Settings], tuple[Any, RecordingEngine]]]:
    engines: list[Engine] = []
    assistants: list[Any] = []

    def build(settings: Settings) -> tuple[Any, RecordingEngine]:
        for old in assistants:
            old.close()
        engines.append(Engine(tiny_model, settings))
        engine = RecordingEngine(engines[-1], continues=True)
        assistants.append(build_assistant(settings, engine=engine))
        return assistants[-1], engine

    yield build
    for assistant in assistants:
        assistant.close()
    for engine in engines:
        engine.close()


def media_bytes_in(data_dir: Path, *payloads: bytes) -> list[str]:
    """Files under the data dir holding an audio/image signature or a slice of the sent media."""
    found = []
    needles = list(MAGICS) + [p[len(p) // 2 : len(p) // 2 + 32] for p in payloads]
    for path in data_dir.rglob("*"):
        if path.is_file() and "models" not in path.parts:
            content = path.read_bytes()
            if any(n in content for n in needles):
                found.append(str(path))
    return found
