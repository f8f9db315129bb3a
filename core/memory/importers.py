"""Bring a person's chat history in: Telegram, Slack, Element (Matrix) exports and plain JSONL.

Each reader streams its file (ijson for the big JSON documents, one day file at a time from a
Slack zip, one line at a time for JSONL) and yields messages or `Bad` records; `import_history`
turns them into turns in batches, embeds only the ones not stored yet, and inserts with the
store's merge on the turn id, so importing the same file twice adds nothing and memory stays
flat however long the history is.

Every imported message keeps the id it had in the export as its `source_id`, its own
timestamp and its chat. What the person said is role "user"; what the others in the chat said
is role "contact", stored as "Name: text" so it reads right when recalled.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import json
import re
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import structlog

from core.memory.records import PRIVATE, Turn, chat_scope
from core.memory.store import Store
from core.memory.when import with_dates

log = structlog.get_logger(__name__)

Format = Literal["telegram", "slack", "matrix", "jsonl"]
FORMATS: tuple[Format, ...] = ("telegram", "slack", "matrix", "jsonl")
PLATFORM: dict[str, str] = {"telegram": "telegram", "slack": "slack", "matrix": "matrix", "jsonl": "import"}
BATCH = 2048  # messages per embedding call and per table append
PEEK_MESSAGES = 20_000  # how far we look for `--me` before refusing to guess
MAX_NAMES = 200  # speakers' names kept per person (a big workspace export has thousands)

Progress = Callable[[int, int], None]  # (done, total) in the reader's own unit (bytes or files)


class ImportFailed(Exception):
    """The file cannot be imported as asked; the message says what to do instead."""


@dataclass(frozen=True)
class Message:
    source_id: str
    speaker: str  # the name to show
    speaker_ids: tuple[str, ...]  # every name or id that identifies the speaker (for --me)
    text: str
    ts: datetime
    chat_id: str
    thread_id: str = ""
    media: str = ""  # "voice" or "photo": the text is a placeholder with the caption
    media_file: str = ""  # the attachment's path inside the export, when the export holds it


# a voice note or photo in an export becomes this placeholder, with its caption after it
VOICE_NOTE = "(voice note)"
PHOTO = "(photo)"
_PLACEHOLDER = {"voice": VOICE_NOTE, "photo": PHOTO}

# (kind, file path) -> the transcript or the text read; None when it cannot be read
MediaRead = Callable[[str, Path], "str | None"]


def _placeholder(kind: str, caption: str) -> str:
    return f"{_PLACEHOLDER[kind]} {caption}".rstrip()


@dataclass(frozen=True)
class Bad:
    where: str  # "line 17", "message 4 in chat 'Family'"
    reason: str


@dataclass
class ImportReport:
    format: str
    read: int = 0
    imported: int = 0
    already_there: int = 0
    mine: int = 0
    skipped_empty: int = 0
    bad: list[Bad] = field(default_factory=list)
    seconds: float = 0.0
    chats: set[str] = field(default_factory=set)
    media: int = 0  # voice notes and photos seen (imported as placeholders)
    media_read: int = 0  # of those, transcribed or read (opt-in)


# -- reading ------------------------------------------------------------------------------------


class _Counting(io.RawIOBase):
    """A binary file that reports how far it has been read (the progress bar's position)."""

    def __init__(self, raw: IO[bytes], total: int, progress: Progress | None) -> None:
        self.raw, self.total, self.progress, self.done = raw, total, progress, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.done += n
        if self.progress and n:
            self.progress(self.done, self.total)
        return n


def _open_counting(path: Path, progress: Progress | None) -> io.BufferedReader:
    return io.BufferedReader(_Counting(path.open("rb"), path.stat().st_size, progress), 1 << 16)


def _utc_from_unix(value: Any) -> datetime:
    return datetime.fromtimestamp(float(value), UTC)


def _utc_from_iso(value: str) -> datetime:
    ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _telegram_text(text: Any) -> str:
    """Telegram gives plain strings, or a list of strings and entity objects with a `text`."""
    if isinstance(text, str):
        return text
    if isinstance(text, list):
        return "".join(p if isinstance(p, str) else str(p.get("text", "")) for p in text)
    return ""


def read_telegram(
    path: Path, progress: Progress | None = None, meta: dict | None = None
) -> Iterator[Message | Bad]:
    """Telegram Desktop's result.json: one chat (`messages` at the top) or the whole account
    (`chats.list[].messages`, and `personal_information.user_id`, which is then the default me)."""
    import ijson

    meta = meta if meta is not None else {}
    chat: dict[str, Any] = {}
    builder = None
    message_prefix = ""
    index = 0
    with _open_counting(path, progress) as fp:
        try:
            for prefix, event, value in ijson.parse(fp, use_float=True):
                if builder is not None:
                    builder.event(event, value)
                    if event == "end_map" and prefix == message_prefix:
                        index += 1
                        yield _telegram_message(builder.value, chat, index)
                        builder = None
                    continue
                if event == "start_map" and prefix.endswith("messages.item"):
                    builder = ijson.ObjectBuilder()
                    builder.event(event, value)
                    message_prefix = prefix
                elif prefix in ("id", "chats.list.item.id", "left_chats.list.item.id"):
                    chat = {**chat, "id": str(value)}
                elif prefix in ("name", "chats.list.item.name", "left_chats.list.item.name"):
                    chat = {**chat, "name": value or ""}
                elif prefix == "personal_information.user_id":
                    meta["me"] = f"user{value}"
                elif event == "start_map" and prefix in ("chats.list.item", "left_chats.list.item"):
                    chat = {}
        except ijson.JSONError as exc:
            yield Bad(f"after message {index}", f"the file is not valid JSON from here on ({exc}); stopped")


def _telegram_message(raw: dict[str, Any], chat: dict[str, Any], index: int) -> Message | Bad:
    where = f"message {index} in chat {chat.get('name') or chat.get('id', '?')!r}"
    if not isinstance(raw, dict):
        return Bad(where, "not an object")
    if raw.get("type", "message") != "message":
        return Message("", "", (), "", datetime.min.replace(tzinfo=UTC), "")  # service: no text
    try:
        message_id = str(raw["id"])
        ts = _utc_from_unix(raw["date_unixtime"]) if "date_unixtime" in raw else _utc_from_iso(raw["date"])
    except (KeyError, ValueError, TypeError) as exc:
        return Bad(where, f"missing or bad id/date ({exc})")
    speaker = str(raw.get("from") or raw.get("actor") or "")
    ids = tuple(x for x in (speaker, str(raw.get("from_id") or "")) if x)
    text = _telegram_text(raw.get("text", ""))
    media, media_file = "", ""
    if raw.get("media_type") in ("voice_message", "audio_file"):
        media, media_file = "voice", str(raw.get("file") or "")
    elif raw.get("photo"):
        media, media_file = "photo", str(raw.get("photo") or "")
    if media:
        text = _placeholder(media, text)
        if media_file.startswith("(File "):  # "(File not included. Change data exporting settings…)"
            media_file = ""
    return Message(
        source_id=message_id,
        speaker=speaker,
        speaker_ids=ids,
        text=text,
        ts=ts,
        chat_id=str(chat.get("id", "")),
        media=media,
        media_file=media_file,
    )


_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")


def read_slack(
    path: Path, progress: Progress | None = None, meta: dict | None = None
) -> Iterator[Message | Bad]:
    """A Slack workspace export: users.json, channels.json (and groups/dms/mpims.json), then
    one folder per conversation with one JSON list of messages per day. Threads keep their
    parent's ts as thread id; chat ids carry the workspace (`TEAM:CHANNEL`) as the bot's do."""
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        root = _zip_root(names, "users.json")

        def load(name: str) -> list[dict[str, Any]]:
            full = root + name
            if full not in names:
                return []
            data = json.loads(zf.read(full))
            return data if isinstance(data, list) else []

        users: dict[str, tuple[str, ...]] = {}
        team = ""
        for u in load("users.json"):
            profile = u.get("profile") or {}
            display = (
                profile.get("display_name")
                or profile.get("real_name")
                or u.get("real_name")
                or u.get("name")
                or u["id"]
            )
            users[u["id"]] = tuple(
                dict.fromkeys(x for x in (display, u.get("name"), u.get("real_name"), u["id"]) if x)
            )
            team = team or u.get("team_id") or u.get("team") or ""
        folders: dict[str, str] = {}
        for listing in ("channels.json", "groups.json", "mpims.json", "dms.json"):
            for c in load(listing):
                if c.get("id"):
                    folders[c.get("name") or c["id"]] = c["id"]
                    folders[c["id"]] = c["id"]
        days = sorted(
            n
            for n in names
            if n.startswith(root) and n.count("/") - root.count("/") == 1 and n.endswith(".json")
        )
        for done, day in enumerate(days, 1):
            folder = day[len(root) :].split("/")[0]
            channel = folders.get(folder, folder)
            chat_id = f"{team}:{channel}" if team else channel
            try:
                messages = json.loads(zf.read(day))
                if not isinstance(messages, list):
                    raise ValueError("not a list of messages")
            except ValueError as exc:
                yield Bad(day, f"not a day file of messages ({exc}); skipped")
                continue
            for i, raw in enumerate(messages, 1):
                yield _slack_message(raw, f"{day} message {i}", chat_id, users)
            if progress:
                progress(done, len(days))


def _zip_root(names: set[str], marker: str) -> str:
    """Exports are sometimes zipped with a top folder; find the folder holding `marker`."""
    for name in sorted(names, key=len):
        if name == marker or name.endswith("/" + marker):
            return name[: -len(marker)]
    return ""


def _slack_message(raw: Any, where: str, chat_id: str, users: dict[str, tuple[str, ...]]) -> Message | Bad:
    if not isinstance(raw, dict) or "ts" not in raw:
        return Bad(where, "no ts")
    if raw.get("subtype") not in (None, "thread_broadcast", "bot_message", "me_message", "file_share"):
        return Message("", "", (), "", datetime.min.replace(tzinfo=UTC), "")  # joins, topic changes
    try:
        ts = _utc_from_unix(raw["ts"])
    except (TypeError, ValueError):
        return Bad(where, f"bad ts {raw.get('ts')!r}")
    user = raw.get("user") or raw.get("bot_id") or ""
    names = users.get(
        user, tuple(x for x in (raw.get("user_profile", {}).get("real_name"), raw.get("username"), user) if x)
    )
    text = _MENTION.sub(lambda m: "@" + users.get(m.group(1), (m.group(1),))[0], str(raw.get("text") or ""))
    media = _slack_media(raw.get("files"))
    if media:
        text = _placeholder(media, text)
    thread = str(raw.get("thread_ts") or "")
    return Message(
        source_id=str(raw["ts"]),
        speaker=names[0] if names else user,
        speaker_ids=names,
        text=text,
        ts=ts,
        chat_id=chat_id,
        thread_id=thread
        if thread and thread != raw["ts"]
        else ("" if not raw.get("reply_count") else str(raw["ts"])),
        media=media,
    )


def _slack_media(files: Any) -> str:
    """A Slack export lists shared files with their mimetype (the bytes are not in the export)."""
    for f in files if isinstance(files, list) else []:
        mime = str(f.get("mimetype") or "") if isinstance(f, dict) else ""
        if mime.startswith("audio/") or (isinstance(f, dict) and f.get("subtype") == "slack_audio"):
            return "voice"
        if mime.startswith("image/"):
            return "photo"
    return ""


def read_matrix(
    path: Path, progress: Progress | None = None, meta: dict | None = None
) -> Iterator[Message | Bad]:
    """Element's "Export chat" JSON: room_name, exported_by, and `messages`, a list of Matrix
    events. Only m.room.message events with a body count; edits (m.replace) are skipped."""

    meta = meta if meta is not None else {}
    if zipfile.is_zipfile(path):  # exported with attachments: export.json inside a zip
        with zipfile.ZipFile(path) as zf:
            name = _zip_root(set(zf.namelist()), "export.json") + "export.json"
            yield from _matrix_events(zf.open(name), meta, None, 0)
        return
    with _open_counting(path, progress) as fp:
        yield from _matrix_events(fp, meta, progress, path.stat().st_size)


def _matrix_events(
    fp: IO[bytes], meta: dict, progress: Progress | None, total: int
) -> Iterator[Message | Bad]:
    import ijson

    index = 0
    builder = None
    try:
        for prefix, event, value in ijson.parse(fp, use_float=True):
            if builder is not None:
                builder.event(event, value)
                if event == "end_map" and prefix == "messages.item":
                    index += 1
                    yield _matrix_message(builder.value, index)
                    builder = None
                continue
            if event == "start_map" and prefix == "messages.item":
                builder = ijson.ObjectBuilder()
                builder.event(event, value)
            elif prefix == "exported_by" and isinstance(value, str):
                meta["me"] = value
    except ijson.JSONError as exc:
        yield Bad(f"after message {index}", f"the file is not valid JSON from here on ({exc}); stopped")


def _matrix_message(raw: Any, index: int) -> Message | Bad:
    where = f"message {index}"
    if not isinstance(raw, dict):
        return Bad(where, "not an object")
    content = raw.get("content") or {}
    relates = content.get("m.relates_to") or {}
    if raw.get("type") != "m.room.message" or relates.get("rel_type") == "m.replace" or "body" not in content:
        return Message("", "", (), "", datetime.min.replace(tzinfo=UTC), "")  # state, edits, redactions
    try:
        ts = _utc_from_unix(float(raw["origin_server_ts"]) / 1000)
        event_id, sender = str(raw["event_id"]), str(raw["sender"])
    except (KeyError, ValueError, TypeError) as exc:
        return Bad(where, f"missing event_id, sender or origin_server_ts ({exc})")
    localpart = sender[1:].split(":")[0] if sender.startswith("@") else sender
    text = str(content.get("body") or "")
    media = {"m.audio": "voice", "m.image": "photo"}.get(str(content.get("msgtype")), "")
    if media:
        # MSC2530: the body is a caption only when a separate filename is given
        filename = content.get("filename")
        text = _placeholder(media, text if filename and filename != text else "")
    return Message(
        source_id=event_id,
        speaker=localpart,
        speaker_ids=(sender, localpart),
        text=text,
        media=media,
        ts=ts,
        chat_id=str(raw.get("room_id") or ""),
        thread_id=str(relates.get("event_id") or "") if relates.get("rel_type") == "m.thread" else "",
    )


def read_jsonl(
    path: Path, progress: Progress | None = None, meta: dict | None = None
) -> Iterator[Message | Bad]:
    """One message per line: {"id", "speaker", "text", "ts" (ISO-8601), "chat" (optional)}."""
    with _open_counting(path, progress) as fp:
        for number, line in enumerate(fp, 1):
            if not line.strip():
                continue
            where = f"line {number}"
            try:
                raw = json.loads(line)
            except (ValueError, UnicodeDecodeError) as exc:
                yield Bad(where, f"not JSON ({exc})")
                continue
            if not isinstance(raw, dict):
                yield Bad(where, "not a JSON object")
                continue
            missing = [k for k in ("id", "speaker", "text", "ts") if raw.get(k) in (None, "")]
            if missing:
                yield Bad(where, f"missing {', '.join(missing)}")
                continue
            if not all(isinstance(raw[k], str | int | float) for k in ("id", "speaker", "text")):
                yield Bad(where, "id, speaker and text must be strings")
                continue
            try:
                ts = _utc_from_iso(str(raw["ts"]))
            except ValueError:
                yield Bad(where, f"ts {raw['ts']!r} is not ISO-8601")
                continue
            speaker = str(raw["speaker"])
            yield Message(
                str(raw["id"]), speaker, (speaker,), str(raw["text"]), ts, str(raw.get("chat") or "import")
            )


READERS: dict[str, Callable[..., Iterator[Message | Bad]]] = {
    "telegram": read_telegram,
    "slack": read_slack,
    "matrix": read_matrix,
    "jsonl": read_jsonl,
}


def detect_format(path: Path) -> Format:
    """Tell the export's kind from its first bytes (or, for a zip, its file names)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if any(n.endswith("users.json") or n.endswith("channels.json") for n in names):
            return "slack"
        if any(n.endswith("export.json") for n in names):
            return "matrix"
        raise ImportFailed(f"{path.name} is a zip but neither a Slack export nor an Element export")
    with path.open("rb") as fp:
        head = fp.read(1 << 16).decode("utf-8", "replace")
    first = head.lstrip().split("\n", 1)[0]
    try:
        if isinstance(json.loads(first), dict) and '"speaker"' in first:
            return "jsonl"
    except ValueError:
        pass
    if any(k in head for k in ('"room_name"', '"exported_by"', '"m.room.message"', '"origin_server_ts"')):
        return "matrix"
    if any(k in head for k in ('"personal_information"', '"date_unixtime"', '"from_id"', '"personal_chat"')):
        return "telegram"
    if '"speaker"' in head:
        return "jsonl"
    raise ImportFailed(
        f"Could not tell what kind of export {path.name} is; pass --format with one of {', '.join(FORMATS)}."
    )


# -- importing -----------------------------------------------------------------------------------


def _matches(message: Message, me: str) -> bool:
    me = me.strip().lower()
    return any(me == s.lower() for s in message.speaker_ids)


def _find_me(path: Path, fmt: str, me: str | None) -> str:
    """Check `--me` against the file's speakers (or take the export's own owner) before
    writing anything, so a typo does not store the person's words as someone else's."""
    meta: dict[str, Any] = {}
    speakers: dict[str, int] = {}
    seen = 0
    for item in READERS[fmt](path, None, meta):
        if isinstance(item, Message) and item.speaker_ids:
            if me is not None and _matches(item, me):
                return me
            speakers[item.speaker] = speakers.get(item.speaker, 0) + 1
            seen += 1
            if me is None and meta.get("me") and _matches(item, meta["me"]):
                return meta["me"]
            if seen >= PEEK_MESSAGES:
                break
    common = ", ".join(f"{name!r}" for name, _ in sorted(speakers.items(), key=lambda kv: -kv[1])[:12])
    if me is None:
        raise ImportFailed(
            f"Say which speaker is this person with --me NAME (speakers in this file: {common})."
        )
    raise ImportFailed(f"No message in {path.name} is from {me!r}; pass --me with one of: {common}.")


def import_history(
    store: Store,
    path: Path,
    person_id: str,
    *,
    me: str | None = None,
    fmt: Format | None = None,
    visibility: Literal["private", "chat"] = "private",
    progress: Progress | None = None,
    batch_size: int = BATCH,
    read_media: MediaRead | None = None,
) -> ImportReport:
    """Import an export file as `person_id`'s history; safe to run again on the same file.

    Voice notes and photos become "(voice note) caption" / "(photo) caption" placeholders. With
    `read_media` (opt-in: transcribing a whole archive takes long), those whose file is in the
    export's folder are transcribed or read, and the text follows the placeholder."""
    path = Path(path)
    if not path.is_file():
        raise ImportFailed(f"No such file: {path}")
    fmt = fmt or detect_format(path)
    if fmt not in READERS:
        raise ImportFailed(f"Unknown format {fmt!r}; use one of {', '.join(FORMATS)}.")
    me = _find_me(path, fmt, me)
    platform = PLATFORM[fmt]
    report = ImportReport(format=fmt)
    started = time.perf_counter()
    others: set[str] = set()
    with _Writer(store, report) as writer:
        batch: list[Turn] = []
        for item in READERS[fmt](path, progress, {}):
            if isinstance(item, Bad):
                report.bad.append(item)
                log.warning("import: skipped a bad record", where=item.where, reason=item.reason)
                continue
            if not item.source_id:
                continue  # service events: joins, topic changes, edits
            report.read += 1
            if item.media:
                report.media += 1
                if read_media is not None and item.media_file:
                    item = _with_media_text(item, path.parent, read_media, report)
            if not item.text.strip():
                report.skipped_empty += 1
                continue
            mine = _matches(item, me)
            report.mine += mine
            if not mine and len(others) < MAX_NAMES:
                others.add(item.speaker)
            report.chats.add(item.chat_id)
            batch.append(
                Turn(
                    person_id=person_id,
                    platform=platform,
                    chat_id=item.chat_id,
                    thread_id=item.thread_id,
                    message_id=item.source_id,
                    source_id=item.source_id,
                    role="user" if mine else "contact",
                    text=with_dates(item.text if mine else f"{item.speaker}: {item.text}", item.ts),
                    ts=item.ts,
                    visibility=PRIVATE if visibility == "private" else chat_scope(platform, item.chat_id),
                )
            )
            if len(batch) >= batch_size:
                writer.submit(batch)
                batch = []
        writer.submit(batch)
    store.ensure_indexes()
    _remember_names(store, person_id, me, others)
    report.seconds = time.perf_counter() - started
    log.info(
        "import finished",
        format=fmt,
        imported=report.imported,
        already_there=report.already_there,
        bad=len(report.bad),
        seconds=round(report.seconds, 1),
    )
    return report


def _with_media_text(item: Message, folder: Path, read_media: MediaRead, report: ImportReport) -> Message:
    """The placeholder followed by what the attachment says; the placeholder alone when unreadable."""
    file = (folder / item.media_file).resolve()
    if not file.is_relative_to(folder.resolve()) or not file.is_file():
        return item  # outside the export, or not exported
    try:
        said = read_media(item.media, file)
    except Exception as exc:  # one broken file must not stop the import
        log.warning("import: a voice note or photo could not be read", error=type(exc).__name__)
        said = None
    if not said:
        return item
    report.media_read += 1
    if report.media_read % 25 == 0:
        log.info("import: voice notes and photos read", done=report.media_read)
    return replace(item, text=f"{item.text} {said}")


def _remember_names(store: Store, person_id: str, me: str, others: set[str]) -> None:
    """Keep who speaks in this export (the person's name here, and the others'), so that a
    question naming someone is understood as about what they said."""
    person = store.person(person_id)
    if person is None:
        return
    settings = person.settings
    before = (len(settings.names), len(settings.contacts))
    for names, new in ((settings.names, [me]), (settings.contacts, sorted(others))):
        known = {n.lower() for n in names}
        names.extend(n for n in new if n.lower() not in known and len(names) < MAX_NAMES)
    if (len(settings.names), len(settings.contacts)) != before:
        store.save_person(person)


class _Writer:
    """Embeds and stores batches on one background thread while the reader parses the next.

    The model's matrix work and LanceDB's writes release the GIL, so on two cores the parsing
    (pure Python) runs beside them instead of after them. At most one batch waits while
    another is embedded, so memory stays flat however long the file is. Turns stored already
    (a re-import) are found before embedding and never embedded again.
    """

    def __init__(self, store: Store, report: ImportReport) -> None:
        self.store, self.report = store, report
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="import")
        self.pending: Future[None] | None = None

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._wait()
        finally:
            self.pool.shutdown(wait=True)

    def submit(self, batch: list[Turn]) -> None:
        turns = list({t.id: t for t in batch}.values())
        if not turns:
            return
        self._wait()
        self.pending = self.pool.submit(self._store, turns)

    def _wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def _store(self, turns: list[Turn]) -> None:
        existing = self.store.existing_turn_ids(t.id for t in turns)
        new = [t for t in turns if t.id not in existing]
        if new:
            vectors = self.store.embedder.embed([t.text for t in new])
            for turn, vector in zip(new, vectors, strict=True):
                turn.vector = vector  # a row of the batch's array: no copy into a list
        added = self.store.append_new_turns(new) if new else 0
        self.report.imported += added
        self.report.already_there += len(turns) - added
        _give_back_freed_memory()


def _give_back_freed_memory() -> None:
    """Hand freed heap pages back to the OS after each batch.

    LanceDB's scans and appends run on many native threads; glibc keeps what they free in
    per-thread arenas, so resident memory crept up ~1.5 MB per batch (174 -> 280 MB over
    100k messages) although nothing was kept. malloc_trim returns it; elsewhere a no-op.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()
