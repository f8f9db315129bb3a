"""CONFIDANTE_STORE_URI puts LanceDB outside the data dir (another disk, or object storage that
several machines share): every process opens it there, the checks look there, and backup says
plainly that such a store is backed up by its own storage."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from app import doctor, health
from app.cli import app
from core.config import Settings, get_settings
from core.memory.records import Turn
from core.memory.store import open_store


def test_the_store_opens_where_the_setting_says_and_the_checks_follow(settings: Settings, embedder, tmp_path):
    elsewhere = tmp_path / "shared-disk" / "confidante-store"
    moved = settings.model_copy(update={"store_uri": str(elsewhere)})
    store = open_store(moved, embedder=embedder)
    turn = Turn(person_id="p1", platform="console", chat_id="p1", message_id="1", role="user", text="kept")
    store.add_turns([turn])
    store.close()
    assert (elsewhere / "turns.lance").is_dir()
    assert not (settings.data_dir / "lancedb").exists(), "nothing written under the data dir"

    assert moved.store_path == elsewhere
    assert health.store(moved.store_path) is None
    finding = doctor._store(moved)
    assert finding.problem is None and "tables" in finding.detail


def test_object_storage_has_no_disk_to_probe_and_doctor_names_the_setting(settings: Settings):
    remote = settings.model_copy(update={"store_uri": "s3://no-such-bucket-here/confidante"})
    assert remote.store_path is None
    assert health.store(None) is None  # readiness then rests on the writer's commits alone
    finding = doctor._store(remote.model_copy(update={"store_uri": "unknown-scheme://x/y"}))
    assert finding.problem is not None and "CONFIDANTE_STORE_URI" in finding.problem


def test_backup_refuses_a_store_outside_the_data_dir_with_what_to_do(tmp_path: Path):
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            app,
            ["backup", str(tmp_path)],
            env={"CONFIDANTE_DATA_DIR": str(tmp_path / "data"), "CONFIDANTE_STORE_URI": "s3://bucket/store"},
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "snapshots" in result.output and "s3://bucket/store" in result.output
