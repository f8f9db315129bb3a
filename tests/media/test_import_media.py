"""Voice notes and photos in chat exports: placeholders with captions by default; transcribed and
read only when asked (the export's own files, read in place)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config import Settings
from core.media.reader import reader_for_import
from core.memory.importers import import_history


@pytest.fixture
def stores(tmp_path: Path, embedder):
    from core.memory.store import Store

    return Store(tmp_path / "plain", embedder), Store(tmp_path / "read", embedder)


def telegram_export(folder: Path, note: bytes, png: bytes) -> Path:
    (folder / "voice_messages").mkdir(parents=True)
    (folder / "photos").mkdir()
    (folder / "voice_messages" / "audio_1.ogg").write_bytes(note)
    (folder / "photos" / "photo_1.png").write_bytes(png)
    base = {"type": "message", "from": "Dana Kim", "from_id": "user1", "text_entities": []}
    messages = [
        {**base, "id": 1, "date_unixtime": "1700000000", "text": "hello", "date": "x"},
        {
            **base,
            "id": 2,
            "date_unixtime": "1700000100",
            "file": "voice_messages/audio_1.ogg",
            "media_type": "voice_message",
            "mime_type": "audio/ogg",
            "duration_seconds": 3,
            "text": "",
        },
        {**base, "id": 3, "date_unixtime": "1700000200", "photo": "photos/photo_1.png", "text": "my receipt"},
        {
            **base,
            "id": 4,
            "date_unixtime": "1700000300",
            "file": "(File not included. Change data exporting settings to download.)",
            "media_type": "voice_message",
            "text": "",
        },
        {
            **base,
            "id": 5,
            "date_unixtime": "1700000400",
            "file": "../../etc/passwd",
            "media_type": "audio_file",
            "text": "",
        },
    ]
    path = folder / "result.json"
    path.write_text(json.dumps({"name": "Notes", "type": "personal_chat", "id": 77, "messages": messages}))
    return path


def texts(store) -> dict[str, str]:
    return {t.source_id: t.text for t in store.turns_of("dana")}


def test_placeholders_by_default_and_reading_on_request(
    tmp_path: Path, stores, sister_note: bytes, receipt_png: bytes
) -> None:
    store, target = stores
    export = telegram_export(tmp_path / "export", sister_note, receipt_png)
    report = import_history(store, export, "dana", me="Dana Kim")
    got = texts(store)
    assert got["2"].startswith("(voice note)") and "Norway" not in got["2"]
    assert got["3"].startswith("(photo) my receipt") and "4721" not in got["3"]
    assert got["4"].startswith("(voice note)")
    assert report.media == 4 and report.media_read == 0

    read = reader_for_import(Settings(data_dir=tmp_path / "data"))
    report = import_history(target, export, "dana", me="Dana Kim", read_media=read)
    got = texts(target)
    assert "Norway" in got["2"] and got["2"].startswith("(voice note)")
    assert "4721" in got["3"] and got["3"].startswith("(photo) my receipt")
    assert report.media_read == 2, (
        "the file not in the export and the one outside it are left as placeholders"
    )


def test_slack_and_matrix_exports_mark_media() -> None:
    from core.memory.importers import _matrix_message, _slack_message

    clip = {
        "ts": "1700000000.1",
        "user": "U1",
        "subtype": "file_share",
        "text": "listen",
        "files": [{"mimetype": "audio/mp4"}],
    }
    image = {"ts": "1700000001.1", "user": "U1", "text": "", "files": [{"mimetype": "image/png"}]}
    assert _slack_message(clip, "x", "C1", {}).text == "(voice note) listen"
    assert _slack_message(image, "x", "C1", {}).text == "(photo)"
    event = {
        "type": "m.room.message",
        "event_id": "$e",
        "sender": "@dana:hs",
        "origin_server_ts": 1700000000000,
        "content": {"msgtype": "m.image", "body": "whiteboard", "filename": "IMG_1.jpg"},
    }
    assert _matrix_message(event, 1).text == "(photo) whiteboard"
    event["content"] = {"msgtype": "m.audio", "body": "Voice message.ogg"}
    assert _matrix_message(event, 1).text == "(voice note)"
