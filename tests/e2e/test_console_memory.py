"""The foundation's promise, end to end on the bundled SmolLM2: two separate terminal sessions,
and the second one remembers the first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def confidante(args: list[str], env: dict[str, str], stdin: str = "") -> str:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture
def env(tmp_path: Path, bundled_models_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CONFIDANTE_DATA_DIR": str(tmp_path / "data"),
        "CONFIDANTE_MODEL_CACHE_DIR": str(bundled_models_dir),
        "CONFIDANTE_TEMPERATURE": "0",
        "CONFIDANTE_MAX_NEW_TOKENS": "48",
    }


def test_second_session_remembers_the_first(env: dict[str, str], tmp_path: Path) -> None:
    confidante(
        ["chat", "--person", "dana"],
        env,
        "My name is Dana and I am training for the Berlin marathon.\n/exit\n",
    )
    answer = confidante(["chat", "--person", "dana"], env, "What am I training for?\n/exit\n")
    assert "marathon" in answer.lower()

    items = json.loads(confidante(["recall", "--person", "dana", "what am I training for", "--json"], env))
    assert "Berlin marathon" in items[0]["text"]
    assert items[0]["source_ids"]
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
