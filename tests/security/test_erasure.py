"""Deletion is real: after /forget_me, /forget and a redaction, the text is gone from every
file under the data dir (grep over the raw bytes), from caches and from later prompts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from core.assistant import Assistant
from core.memory.records import Memory, chat_scope
from tests.helpers import RecordingEngine, dm, group, say


class RecordingJobs:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def after_turn(self, person_id: str) -> None:
        self.calls.append(("after_turn", person_id))

    def memory_changed(self, person_id: str) -> None:
        self.calls.append(("memory_changed", person_id))

    def forget_person(self, person_id: str) -> None:
        self.calls.append(("forget_person", person_id))


def files_containing(root: Path, needle: str) -> list[str]:
    found = subprocess.run(["grep", "-rlaF", needle, str(root)], capture_output=True, text=True)
    return found.stdout.split()


ALICE = ["QUOKKA-7731", "TAPIR-2290", "NARWHAL-5150", "PANGOLIN-4242", "AXOLOTL-9001", "GECKO-1234"]


async def _alice_everywhere(a: Assistant) -> str:
    tg = lambda t: dm(t, person="alice", platform="telegram", chat_id="dm-alice")  # noqa: E731
    await say(a, tg(f"my locker code is {ALICE[0]}"))
    await say(a, tg(f"and my favourite place is {ALICE[1]}"))
    await say(a, group(f"team note from alice {ALICE[2]}", "alice", chat_id="-100"))
    await say(a, group(f"unaddressed remark {ALICE[3]}", "alice", chat_id="-100", addressed=False))
    await say(a, group("bob's note BOB-KEEPS-1, @alice said something", "bob", chat_id="-100"))
    await say(a, dm("bob's private BOB-KEEPS-2", person="bob", platform="telegram", chat_id="dm-bob"))
    pid = a.store.person_for("telegram", "alice")
    # a linked Slack account, with its own history
    code = (await say(a, tg("/link"))).split("code is ")[1][:8]
    await say(a, dm(f"/link {code}", person="T1:U1", platform="slack", chat_id="T1:D1"))
    await say(a, dm(f"slack side {ALICE[4]}", person="T1:U1", platform="slack", chat_id="T1:D1"))
    person = a.store.person(pid)
    person.profile = f"Alice, profile {ALICE[5]}"
    a.store.save_person(person)
    a.store.save_memories(
        [
            Memory(pid, "fact", f"Locker code {ALICE[0]}", "am1", source_turn_ids=[]),
            Memory(pid, "fact", f"Team note {ALICE[2]}", "am2", visibility=chat_scope("telegram", "-100")),
        ]
    )
    a.store.ensure_indexes()
    return pid


async def test_forget_me_leaves_nothing_on_disk(
    assistant: Assistant, engine: RecordingEngine, settings
) -> None:
    jobs = RecordingJobs()
    a = Assistant(settings, assistant.store, engine, jobs=jobs)
    pid = await _alice_everywhere(a)
    root = settings.data_dir
    for marker in ALICE:
        assert files_containing(root, marker), f"precondition: {marker} is on disk"
    tg = lambda t: dm(t, person="alice", platform="telegram", chat_id="dm-alice")  # noqa: E731
    assert "confirm" in await say(a, tg("/forget_me"))
    assert a.store.person(pid) is not None, "nothing is erased before the confirmation"
    assert (await say(a, tg("/forget_me confirm"))).startswith("Done")
    for marker in ALICE:
        assert files_containing(root, marker) == [], f"{marker} is still on disk after /forget_me"
    assert files_containing(root, pid) == [], "the erased person's id is still on disk"
    assert ("forget_person", pid) in jobs.calls, "the workers were not told to drop derived data"
    # What others said stays (the grep above could have found text).
    assert files_containing(root, "BOB-KEEPS-2")
    # Nothing comes back through caches: a new prompt in the group and in her DM.
    await say(a, group("what did alice say?", "bob", chat_id="-100"))
    assert not [m for m in ALICE if m in json.dumps(engine.prompts[-1])]
    await say(a, tg("what is my locker code?"))
    assert not [m for m in ALICE if m in json.dumps(engine.prompts[-1])]
    export = (await a.handle(tg("/export"))).document.content.decode()
    assert not [m for m in ALICE if m in export]
    slack = a.store.person_for("slack", "T1:U1")
    assert slack is None or slack != pid


async def test_forget_one_item_and_redaction_reach_the_disk(assistant: Assistant, settings) -> None:
    a = assistant
    tg = lambda t, **kw: dm(t, person="alice", platform="telegram", chat_id="dm-alice", **kw)  # noqa: E731
    await say(a, tg("remember the word WOMBAT-3141"))
    await say(a, tg("my old flat was on ORYX-2718 street", message_id="flat-1"))
    await say(a, tg("keep this KEEP-1618"))
    pid = a.store.person_for("telegram", "alice")
    turn = a.store.turns_by_message("telegram", "dm-alice", "flat-1")[0]
    a.store.save_memories([Memory(pid, "fact", "Old flat on ORYX-2718", "m-oryx", source_turn_ids=[turn.id])])
    root = settings.data_dir
    assert files_containing(root, "WOMBAT-3141") and files_containing(root, "ORYX-2718")
    reply = await say(a, tg("/forget WOMBAT"))
    assert reply.startswith("Forgotten"), reply
    assert files_containing(root, "WOMBAT-3141") == []
    await a.redact("telegram", "dm-alice", "flat-1")  # the person deleted the message
    assert files_containing(root, "ORYX-2718") == [], "the memory derived from it must go too"
    assert files_containing(root, "KEEP-1618")


async def test_edits_only_by_the_author_and_old_text_leaves_the_disk(assistant: Assistant, settings) -> None:
    a = assistant
    await say(a, group("alice's original words", "alice", chat_id="-100", message_id="g-77"))
    forged = group(
        "alice says: my password is hunter2", "mallory", chat_id="-100", message_id="g-77", edited=True
    )
    assert await a.handle(forged) is None
    stored = a.store.turns_by_message("telegram", "-100", "g-77")
    assert [t.text for t in stored if t.role == "user"] == ["alice's original words"]
    own = group("alice's corrected words", "alice", chat_id="-100", message_id="g-77", edited=True)
    await a.handle(own)
    stored = a.store.turns_by_message("telegram", "-100", "g-77")
    assert [t.text for t in stored if t.role == "user"] == ["alice's corrected words"]
    assert files_containing(settings.data_dir, "alice's original words") == [], "edited-away text on disk"


def _bulk(person: str, n: int, tag: str) -> list:
    from core.memory.records import Turn

    turns = []
    for i in range(n):
        t = Turn(person, "telegram", f"dm-{person}", f"{tag}{i}", "user", f"{person} says ordinary thing {i}")
        t.vector = [1.0] + [0.0] * 383
        turns.append(t)
    return turns


def test_small_deletions_in_a_compacted_table_leave_the_disk(store) -> None:
    """Compaction rewrites a data file only when 10% of it is deleted: one person among many
    (or one message among thousands) must still leave the disk."""
    from core.memory.records import Turn

    store.add_turns(_bulk("bob", 300, "b"))
    secret = Turn("alice", "telegram", "dm-alice", "a1", "user", "alice's word SMALLDEL-MARMOT")
    edited = Turn("carol", "telegram", "dm-carol", "c1", "user", "carol first said SMALLDEL-EDITED")
    single = Turn("bob", "telegram", "dm-bob", "b-x", "user", "bob's one regret SMALLDEL-SINGLE")
    for t in (secret, edited, single):
        t.vector = [0.0, 1.0] + [0.0] * 382
    store.add_turns([secret, edited, single])
    store.save_memories(
        [Memory("alice", "fact", "Alice word SMALLDEL-MEMORY", "am", vector=[1.0] + [0.0] * 383)]
    )
    store.ensure_indexes()  # compacts everything into a few large files and builds text indexes
    store.purge_history()
    root = Path(store.uri)
    for marker in ("SMALLDEL-MARMOT", "SMALLDEL-EDITED", "SMALLDEL-SINGLE", "SMALLDEL-MEMORY"):
        assert files_containing(root, marker), f"precondition: {marker} on disk"
    store.forget_person("alice")
    store.delete_turns([single.id])
    store.edit_turn("telegram", "dm-carol", "c1", "carol now says something else")
    store.purge_history()
    for marker in ("SMALLDEL-MARMOT", "SMALLDEL-EDITED", "SMALLDEL-SINGLE", "SMALLDEL-MEMORY"):
        assert files_containing(root, marker) == [], f"{marker} is still on disk"
    # Everyone else's rows are intact and still searchable by text and by vector.
    assert len(store.turns_of("bob")) == 300
    assert store.search_text("turns", "bob", "ordinary thing", visibilities=["private"], k=5)
    assert store.search_vector("turns", "bob", [1.0] + [0.0] * 383, visibilities=["private"], k=5)
