"""`confidante import` and `confidante recall --queries` as a person would run them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from app.cli import app
from core.config import get_settings
from tests.history.conftest import DATA


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CONFIDANTE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CONFIDANTE_CONFIG", str(tmp_path / "none.toml"))
    get_settings.cache_clear()
    # the command points logging at the runner's stderr, which closes after each invoke
    saved_structlog = structlog.get_config()
    saved_handlers = list(logging.getLogger().handlers)
    yield CliRunner()
    structlog.configure(**saved_structlog)
    logging.getLogger().handlers[:] = saved_handlers
    get_settings.cache_clear()


def test_import_then_recall_many_questions_in_one_process(cli: CliRunner, tmp_path: Path) -> None:
    result = cli.invoke(app, ["import", str(DATA / "history.jsonl"), "--person", "dana", "--me", "dana"])
    assert result.exit_code == 0, result.output
    assert "4 imported" in result.output and "line 4" in result.output

    again = cli.invoke(app, ["import", str(DATA / "history.jsonl"), "--person", "dana", "--me", "dana"])
    assert "0 imported" in again.output and "4 already there" in again.output

    questions = tmp_path / "questions.txt"
    questions.write_text("Who is my team lead?\nWhere did I start working in March 2023?\n\nO'Brien\n")
    result = cli.invoke(
        app, ["recall", "--person", "dana", "--queries", str(questions), "--k", "3", "--now", "2023-06-01"]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert len(lines) == 4  # one JSON list per question line, in order (an empty line: [])
    assert lines[2] == []
    for items in (lines[0], lines[1], lines[3]):
        assert items and len(items) <= 3
        assert all(set(i) >= {"text", "kind", "score", "ts", "source_ids"} for i in items)
    assert lines[0][0]["source_ids"] == ["j3"]
    assert lines[1][0]["source_ids"] == ["j1"] and lines[1][0]["ts"].startswith("2023-03-06")


def test_import_errors_say_what_to_do(cli: CliRunner, tmp_path: Path) -> None:
    result = cli.invoke(app, ["import", str(DATA / "telegram_chat.json"), "--person", "dana"])
    assert result.exit_code == 1 and "--me" in result.output
    result = cli.invoke(app, ["import", str(tmp_path / "missing.json"), "--person", "dana", "--me", "x"])
    assert result.exit_code == 1 and "No such file" in result.output
    result = cli.invoke(
        app, ["import", str(DATA / "history.jsonl"), "--person", "dana", "--format", "whatsapp"]
    )
    assert result.exit_code == 2 and "telegram" in result.output
