"""`confidante backup` while the bot writes and purges, then `confidante restore` elsewhere: every
turn accepted before the backup began comes back, and nothing else of the data dir is lost."""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path

from typer.testing import CliRunner

from app.cli import app
from core.config import Settings, get_settings
from core.memory.records import Turn
from core.memory.store import open_store


def _cli(*args: str, data_dir: Path):
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, list(args), env={"CONFIDANTE_DATA_DIR": str(data_dir)})
    finally:
        get_settings.cache_clear()


def test_backup_while_writing_and_purging_restores_every_accepted_turn(
    settings: Settings, embedder, tmp_path: Path
) -> None:
    store = open_store(
        settings, journal=True
    )  # the running bot: journal owned, turns written in the background
    data = settings.data_dir
    (data / "adapters" / "p1" / "v1").mkdir(parents=True)
    (data / "adapters" / "p1" / "v1" / "adapter_model.safetensors").write_bytes(b"weights")
    (data / "models" / "big").mkdir(parents=True)
    (data / "models" / "big" / "model.safetensors").write_bytes(b"x" * 1000)

    accepted: list[str] = []
    stop = threading.Event()

    def chat() -> None:  # people keep talking during the backup
        n = 0
        while not stop.is_set():
            turn = Turn("p1", "console", "p1", f"m{n}", "user", f"note number {n}")
            store.record_turns([turn])
            accepted.append(turn.id)
            n += 1
            time.sleep(0.005)

    writer = threading.Thread(target=chat)
    writer.start()
    try:
        time.sleep(1.5)  # some turns committed, some still in the journal
        store.purge_history()  # old versions dropped while the backup is about to copy
        before = list(accepted)
        purger = threading.Thread(target=store.purge_history)  # and once more during it
        purger.start()
        archive = tmp_path / "backup.tar.gz"
        result = _cli("backup", str(archive), data_dir=data)
        purger.join()
        assert result.exit_code == 0, result.output
        # restoring over a data dir a process is running on is refused
        refused = _cli("restore", str(archive), "--force", data_dir=data)
        assert refused.exit_code == 1 and "a chat process is running" in refused.output
    finally:
        stop.set()
        writer.join()
        store.close()
    assert len(before) > 50 and len(accepted) > len(before)
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600

    target = tmp_path / "restored"
    result = _cli("restore", str(archive), data_dir=target)
    assert result.exit_code == 0, result.output
    assert (target / "adapters" / "p1" / "v1" / "adapter_model.safetensors").read_bytes() == b"weights"
    assert not (target / "models").exists()  # rebuilt at start, not worth a backup's space
    assert stat.S_IMODE(target.stat().st_mode) == 0o700

    restored = open_store(Settings(data_dir=target, _env_file=None), journal=True)  # replays the journal copy
    try:
        restored.settle()
        present = restored.existing_turn_ids(before)
        assert present == set(before), f"{len(set(before) - present)} accepted turns missing"
        assert restored.counts()["turns"] <= len(accepted)
    finally:
        restored.close()

    # a file that is no backup changes nothing, whatever --force says
    (tmp_path / "notes.tar.gz").write_text("not an archive")
    bad = _cli("restore", str(tmp_path / "notes.tar.gz"), "--force", data_dir=target)
    assert bad.exit_code == 1 and "nothing was changed" in " ".join(bad.output.split())
    assert (target / "adapters").exists() and not list(tmp_path.glob("restored.before-restore-*"))
    # an existing data dir is kept aside, not overwritten, and only with --force
    assert _cli("restore", str(archive), data_dir=target).exit_code == 1
    result = _cli("restore", str(archive), "--force", data_dir=target)
    assert result.exit_code == 0 and list(tmp_path.glob("restored.before-restore-*"))
