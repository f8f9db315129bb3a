"""Real LanceDB stores in temp dirs and the real embedder, for import and recall tests."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from core.memory.store import Store

DATA = Path(__file__).parent / "data"


@pytest.fixture
def store(tmp_path: Path, embedder) -> Store:
    return Store(tmp_path / "lancedb", embedder)


@pytest.fixture
def slack_zip(tmp_path: Path) -> Path:
    """The committed Slack export folder, zipped the way Slack delivers it."""
    target = tmp_path / "slack-export.zip"
    source = DATA / "slack_export"
    with zipfile.ZipFile(target, "w") as zf:
        for root, _, files in os.walk(source):
            for name in sorted(files):
                path = Path(root) / name
                zf.write(path, path.relative_to(source).as_posix())
    return target
