"""Each export format into real turns: ids, times, chats, roles, bad records, re-import."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.memory.importers import ImportFailed, detect_format, import_history
from core.memory.records import PRIVATE, chat_scope
from tests.history.conftest import DATA


def _turns(store, person="dana"):
    return {t.source_id: t for t in store.turns_of(person)}


def test_detects_every_format(slack_zip: Path) -> None:
    assert detect_format(DATA / "telegram_chat.json") == "telegram"
    assert detect_format(DATA / "telegram_account.json") == "telegram"
    assert detect_format(DATA / "element_room.json") == "matrix"
    assert detect_format(DATA / "history.jsonl") == "jsonl"
    assert detect_format(slack_zip) == "slack"


def test_undetectable_file_says_what_to_pass(tmp_path: Path) -> None:
    odd = tmp_path / "notes.json"
    odd.write_text('{"hello": "world"}')
    with pytest.raises(ImportFailed, match="--format"):
        detect_format(odd)


def test_telegram_single_chat(store) -> None:
    report = import_history(store, DATA / "telegram_chat.json", "dana", me="Dana Kim")
    turns = _turns(store)
    assert set(turns) == {"101", "102", "104", "106"}  # service message and dateless one left out
    assert report.imported == 4 and report.skipped_empty == 0
    assert turns["106"].text == "Sam Rivera: (photo)"  # a photo not in the export: the placeholder
    [bad] = report.bad
    assert "message 5" in bad.where and "date" in bad.reason
    mine = turns["101"]
    assert mine.role == "user" and mine.platform == "telegram" and mine.chat_id == "4815162342"
    assert mine.ts == datetime(2023, 5, 8, 9, 15, 2, tzinfo=UTC)
    assert mine.visibility == PRIVATE
    other = turns["102"]
    # entity parts joined into one text, and marked as said by the other person
    assert other.role == "contact"
    assert other.text == "Sam Rivera: Nice! Try the pastéis de nata at https://example.org/manteigaria"


def test_telegram_account_export_knows_its_owner(store) -> None:
    report = import_history(store, DATA / "telegram_account.json", "dana")  # no --me: personal_information
    turns = _turns(store)
    assert report.mine == 2 and report.imported == 4
    assert turns["201"].role == "user" and turns["8"].role == "user"
    assert turns["7"].text == "Ola: Session at Boulderwelt on Saturday?"
    assert {t.chat_id for t in turns.values()} == {"4815162342", "1234567890"}


def test_slack_zip_keeps_threads_and_workspace(store, slack_zip: Path) -> None:
    report = import_history(store, slack_zip, "dana", me="dana")
    turns = _turns(store)
    assert set(turns) == {"1709550000.000200", "1709550300.000300", "1709632800.000100", "1709640000.000100"}
    parent, reply = turns["1709550000.000200"], turns["1709550300.000300"]
    assert parent.chat_id == "T0CONF:C0GENERAL" and parent.role == "user"
    assert reply.thread_id == parent.thread_id == "1709550000.000200"
    assert reply.text == "Ravi Patel: @dana.k can you book the venue?"  # mention resolved
    assert turns["1709640000.000100"].chat_id == "T0CONF:D024BE91L"
    assert [b.where for b in report.bad] == ["general/2024-03-05.json message 2"]


def test_element_export(store) -> None:
    report = import_history(store, DATA / "element_room.json", "dana", me="@dana:example.org")
    turns = _turns(store)
    assert set(turns) == {"$msg1-bbbb", "$msg2-cccc", "$msg3-eeee"}  # the edit is not a new message
    assert turns["$msg2-cccc"].thread_id == "$msg1-bbbb"
    assert turns["$msg2-cccc"].role == "contact"
    assert turns["$msg1-bbbb"].ts == datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    assert turns["$msg1-bbbb"].chat_id == "!bookclub:example.org"
    assert len(report.bad) == 1


def test_jsonl_bad_lines_are_reported_and_skipped(store) -> None:
    report = import_history(store, DATA / "history.jsonl", "dana", me="dana")
    assert [b.where for b in report.bad] == ["line 4", "line 5", "line 6"]
    assert "ISO-8601" in report.bad[2].reason
    turns = _turns(store)
    assert set(turns) == {"j1", "j2", "j3", "j7"}
    assert turns["j3"].chat_id == "import"
    assert turns["j7"].chat_id == "it's'a\"chat"  # quotes reach LanceDB only through the store's quoting


def test_reimport_adds_nothing(store, slack_zip: Path) -> None:
    first = import_history(store, slack_zip, "dana", me="dana")
    before = store.counts()["turns"]
    again = import_history(store, slack_zip, "dana", me="dana")
    assert first.imported == 4
    assert again.imported == 0 and again.already_there == 4
    assert store.counts()["turns"] == before


def test_chat_visibility_when_chosen(store) -> None:
    import_history(store, DATA / "history.jsonl", "dana", me="dana", visibility="chat")
    turns = _turns(store)
    assert turns["j1"].visibility == chat_scope("import", "work-notes")


def test_unknown_me_lists_the_speakers(store) -> None:
    with pytest.raises(ImportFailed) as info:
        import_history(store, DATA / "telegram_chat.json", "dana", me="Danna")
    assert "'Dana Kim'" in str(info.value) and "'Sam Rivera'" in str(info.value)
    assert store.counts()["turns"] == 0  # nothing written under the wrong speaker


def test_missing_me_is_asked_for(store) -> None:
    with pytest.raises(ImportFailed, match="--me"):
        import_history(store, DATA / "history.jsonl", "dana")


def test_truncated_json_keeps_what_came_before(store) -> None:
    report = import_history(store, DATA / "telegram_truncated.json", "dana", me="Dana", fmt="telegram")
    assert report.imported == 1
    assert "not valid JSON" in report.bad[-1].reason


def test_slack_day_file_that_is_not_json(store, slack_zip: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(slack_zip) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item.filename))
        dst.writestr("general/2024-03-06.json", "[{ not json")
    report = import_history(store, broken, "dana", me="U01DANA")
    assert report.imported == 4
    assert any(b.where == "general/2024-03-06.json" for b in report.bad)


def test_odd_unicode_and_huge_messages(store, tmp_path: Path) -> None:
    path = tmp_path / "odd.jsonl"
    rows = [
        {
            "id": "u1",
            "speaker": "dana",
            "text": "zero\u200bwidth, RTL \u202eabc, emoji 🧗\u200d♀️",
            "ts": "2024-01-01T00:00:00Z",
        },
        {"id": "u2", "speaker": "dana", "text": "long " * 20_000, "ts": "2024-01-02T00:00:00Z"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\ufeff\n")
    report = import_history(store, path, "dana", me="dana")
    assert report.imported == 2
    assert _turns(store)["u1"].text == rows[0]["text"]


def test_progress_reaches_the_end(store) -> None:
    seen: list[tuple[int, int]] = []
    import_history(
        store, DATA / "history.jsonl", "dana", me="dana", progress=lambda d, t: seen.append((d, t))
    )
    assert seen and seen[-1][0] == seen[-1][1] == (DATA / "history.jsonl").stat().st_size
