"""The durable inbox in the core: what a process that died mid-answer left is answered once by
the next one (with a note that it is late), what was answered is never answered again, what is
too old is kept but not answered, and a reply already on the platform is continued, not resent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.assistant import LATE_NOTE, Assistant
from core.inbox import Inbox, State, key_of
from core.memory.store import open_store
from tests.helpers import dm


def process(settings, embedder, engine) -> Assistant:
    """What `confidante run` builds, on the same data dir: a new call is a new process."""
    return Assistant(
        settings, open_store(settings, journal=True), engine, inbox=Inbox(settings.data_dir / "inbox.sqlite3")
    )


async def test_a_message_left_mid_answer_is_answered_once_by_the_next_process(settings, embedder, engine):
    first = process(settings, embedder, engine)
    msg = dm("What did I say about the marathon?", platform="telegram")
    first.accept(msg)  # the channel records it before acknowledging the platform
    reply = await first.handle(msg)
    assert reply is not None and reply.stream is not None
    await reply.stream.__anext__()  # streaming has begun...
    reply.sent("501")  # ...the platform returned the first message's id...
    first.close()  # ...and the process dies before the answer is complete

    second = process(settings, embedder, engine)
    try:
        pending = await second.unanswered("telegram")
        assert [m.message_id for m in pending] == [msg.message_id]
        again = await second.handle(pending[0])
        assert again is not None
        assert again.earlier == ("501",)  # continue in that message, do not send another
        text = await again.collect()
        assert text.startswith(LATE_NOTE) and len(text) > len(LATE_NOTE)
        assert second.inbox.get(key_of(msg)).state is State.ANSWERED
        assert await second.handle(msg) is None  # the platform redelivers it: dropped
        assert await second.unanswered("telegram") == []
        stored = second.store.turns_by_message("telegram", msg.chat_id, msg.message_id)
        assert sorted(t.role for t in stored) == ["assistant", "user"]  # the message is stored once
    finally:
        second.close()
    inbox_files = [p for p in settings.data_dir.iterdir() if p.name.startswith("inbox")]
    assert inbox_files and not [p for p in inbox_files if b"the marathon" in p.read_bytes()]


async def test_an_answered_message_redelivered_after_a_restart_is_dropped(settings, embedder, engine):
    first = process(settings, embedder, engine)
    msg = dm("hello there", platform="slack")
    await (await first.handle(msg)).collect()
    first.close()

    second = process(settings, embedder, engine)
    try:
        assert await second.unanswered("slack") == []
        assert await second.handle(msg) is None
    finally:
        second.close()


async def test_a_message_older_than_the_window_is_kept_but_not_answered(settings, embedder, engine):
    first = process(settings, embedder, engine)
    old = datetime.now(UTC) - timedelta(seconds=settings.late_reply_window_seconds + 60)
    msg = dm("My cat is called Miso.", platform="matrix", ts=old)
    first.accept(msg)  # received, then the process died before answering
    first.close()

    second = process(settings, embedder, engine)
    try:
        assert await second.unanswered("matrix") == []
        assert second.inbox.get(key_of(msg)).state is State.ANSWERED
        stored = second.store.turns_by_message("matrix", msg.chat_id, msg.message_id)
        assert [t.text for t in stored] == ["My cat is called Miso."]  # remembered, not answered
    finally:
        second.close()


async def test_a_reply_finished_but_not_shown_before_the_crash_is_shown_not_regenerated(
    settings, embedder, engine
):
    first = process(settings, embedder, engine)
    msg = dm("Tell me something", platform="telegram")
    reply = await first.handle(msg)
    generated = "".join([d async for d in reply.stream])  # the turn is recorded; never shown
    first.close()

    second = process(settings, embedder, engine)
    try:
        [pending] = await second.unanswered("telegram")
        prompts = len(engine.prompts)
        again = await second.handle(pending)
        assert await again.collect() == LATE_NOTE + generated.strip()
        assert len(engine.prompts) == prompts  # nothing generated twice
    finally:
        second.close()
