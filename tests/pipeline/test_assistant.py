"""The pipeline on a tiny random Llama and real LanceDB files."""

from __future__ import annotations

import json
from pathlib import Path

from core.assistant import Assistant
from core.memory.records import PRIVATE
from tests.helpers import dm, group, say


async def test_direct_message_is_answered_and_both_turns_recorded(assistant: Assistant) -> None:
    answer = await say(assistant, dm("I am training for the Berlin marathon."))
    assert answer is not None and answer.strip()
    turns = assistant.store.turns_of("dana")
    assert [t.role for t in turns] == ["user", "assistant"]
    assert turns[0].visibility == PRIVATE


async def test_same_message_twice_is_answered_once(assistant: Assistant) -> None:
    msg = dm("hello there", message_id="42")
    assert await say(assistant, msg) is not None
    assert await say(assistant, msg) is None
    # a restart forgets the in-memory set; the stored turn still dedupes
    fresh = Assistant(assistant.settings, assistant.store, assistant.engine)
    assert await say(fresh, msg) is None
    assert len(assistant.engine.prompts) == 1


async def test_empty_message_gets_a_clear_answer(assistant: Assistant) -> None:
    answer = await say(assistant, dm("   "))
    assert "empty" in answer
    assert assistant.store.turns_of("dana") == []


async def test_huge_message_is_kept_whole_and_explained(assistant: Assistant) -> None:
    text = "x" * 100_000
    answer = await say(assistant, dm(text))
    assert "100,000 characters" in answer
    [turn] = assistant.store.turns_of("dana")
    assert turn.text == text
    assert assistant.engine.prompts == []


async def test_odd_unicode_is_stored_and_answered(assistant: Assistant) -> None:
    text = "bad surrogate \ud800 nul \x00 emoji 🎉 rtl \u202e café"
    answer = await say(assistant, dm(text))
    assert answer is not None
    [turn, _] = assistant.store.turns_of("dana")
    assert "emoji 🎉" in turn.text and "café" in turn.text
    assert "\ud800" not in turn.text and "\x00" not in turn.text


async def test_earlier_fact_reaches_the_prompt_in_a_later_session(assistant: Assistant) -> None:
    await say(assistant, dm("My dog is called Biscuit.", chat_id="session-1"))
    await say(assistant, dm("What is my dog called?", chat_id="session-2"))
    assert "Biscuit" in assistant.engine.last_prompt_text()


async def test_group_message_not_addressed_is_context_only(assistant: Assistant) -> None:
    assert await say(assistant, group("lunch at noon?", "alice", addressed=False)) is None
    assert assistant.engine.prompts == []
    [turn] = assistant.store.turns_of(assistant.store.person_for("telegram", "alice"))
    assert turn.visibility == "chat:telegram:g1"
    await say(assistant, group("what did I ask about?", "alice"))
    assert "lunch at noon?" in assistant.engine.last_prompt_text()


async def test_private_fact_never_in_group_prompt(assistant: Assistant) -> None:
    await say(assistant, dm("My salary is 91234 euros.", person="bob", platform="telegram"))
    await say(assistant, group("what is my salary? list all my memories", "bob"))
    assert "91234" not in assistant.engine.last_prompt_text()


async def test_memory_lists_and_forget_by_number_removes_from_disk(
    assistant: Assistant, tmp_path: Path
) -> None:
    await say(assistant, dm("My code word is quokka-5521."))
    listing = await say(assistant, dm("/memory"))
    assert "1. You said: “My code word is quokka-5521.”" in listing
    assert "direct chat" in listing
    assert "Forgotten: 1 item" in await say(assistant, dm("/forget 1"))
    assert assistant.store.turns_of("dana") == []
    leftovers = [
        p for p in Path(assistant.store.uri).rglob("*") if p.is_file() and b"quokka-5521" in p.read_bytes()
    ]
    assert leftovers == []


async def test_forget_by_words(assistant: Assistant) -> None:
    await say(assistant, dm("I love the Tokyo marathon"))
    await say(assistant, dm("I like tea"))
    assert "Forgotten" in await say(assistant, dm("/forget tokyo"))
    assert [t.text for t in assistant.store.turns_of("dana") if t.role == "user"] == ["I like tea"]
    assert "nothing" in await say(assistant, dm("/forget zebra"))
    assert "no item 99" in await say(assistant, dm("/forget 99"))


async def test_export_holds_all_my_data(assistant: Assistant) -> None:
    await say(assistant, dm("I play the cello."))
    reply = await assistant.handle(dm("/export"))
    data = json.loads(reply.document.content)
    assert data["person"]["person_id"] == "dana"
    assert "I play the cello." in [t["text"] for t in data["turns"]]
    assert {"platform": "console", "platform_user_id": "dana", "person_id": "dana"}.items() <= data[
        "accounts"
    ][0].items()


async def test_export_and_forget_me_refused_in_groups(assistant: Assistant) -> None:
    assert "direct chat" in await say(assistant, group("/export", "alice"))
    assert "direct chat" in await say(assistant, group("/forget_me", "alice"))


async def test_forget_me_needs_confirmation_then_erases_everything(assistant: Assistant) -> None:
    await say(assistant, dm("My passport number is X9971234."))
    await say(assistant, dm("I like tea", person="erin"))
    reply = await assistant.handle(dm("/forget_me"))
    assert reply.buttons and reply.buttons[0].command == "/forget_me confirm"
    assert assistant.store.turns_of("dana"), "nothing erased before confirming"
    assert "erased" in await say(assistant, dm("/forget_me confirm"))
    root = Path(assistant.settings.data_dir)
    assert [p for p in root.rglob("*") if p.is_file() and b"X9971234" in p.read_bytes()] == []
    assert assistant.store.person("dana") is None
    assert [t.text for t in assistant.store.turns_of("erin") if t.role == "user"] == ["I like tea"]


async def test_confirm_without_asking_first_erases_nothing(assistant: Assistant) -> None:
    await say(assistant, dm("keep me"))
    reply = await assistant.handle(dm("/forget_me confirm"))
    assert reply.buttons
    assert assistant.store.turns_of("dana")


async def test_pause_stops_remembering_and_resume_restarts(assistant: Assistant) -> None:
    await say(assistant, dm("/pause"))
    await say(assistant, dm("secret while paused"))
    assert assistant.store.turns_of("dana") == []
    await say(assistant, dm("/resume"))
    await say(assistant, dm("remember this"))
    assert [t.text for t in assistant.store.turns_of("dana") if t.role == "user"] == ["remember this"]


async def test_edit_updates_the_stored_turn(assistant: Assistant) -> None:
    await say(assistant, dm("I live in Berlim", message_id="7"))
    assert await assistant.handle(dm("I live in Berlin", message_id="7", edited=True)) is None
    assert [t.text for t in assistant.store.turns_of("dana") if t.role == "user"] == ["I live in Berlin"]


async def test_redaction_forgets_the_message(assistant: Assistant) -> None:
    await say(assistant, dm("delete me later", message_id="9", platform="matrix", chat_id="!room"))
    await assistant.redact("matrix", "!room", "9")
    assert assistant.store.turns_of(assistant.store.person_for("matrix", "dana")) == []


async def test_closed_chat_is_not_answered(assistant: Assistant) -> None:
    await assistant.chat_closed("telegram", "g1")
    assert await say(assistant, group("hello bot", "alice")) is None


async def test_generation_failure_is_told_and_message_kept(assistant: Assistant) -> None:
    class Broken:
        context_tokens = 2048

        def count_tokens(self, text: str) -> int:
            return len(text)

        async def stream(self, messages, **kwargs):
            raise RuntimeError("out of memory")
            yield ""

    broken = Assistant(assistant.settings, assistant.store, Broken())
    answer = await say(broken, dm("hello"))
    assert "couldn't finish" in answer
    assert [t.text for t in broken.store.turns_of("dana") if t.role == "user"] == ["hello"]


async def test_recall_ranks_a_statement_above_the_same_question(assistant: Assistant) -> None:
    await say(assistant, dm("My name is Dana and I am training for the Berlin marathon."))
    await say(assistant, dm("What am I training for?"))
    assistant.store.settle()  # recall reads LanceDB, and the turns were staged a moment ago
    person = assistant.store.person("dana")
    from core.memory.recall import ChatContext

    [vector] = assistant.store.embed(["what am I training for"])
    items = assistant.recall.recall(person, ChatContext("console", "dana", "direct"), vector)
    assert "Berlin marathon" in items[0].text


async def test_each_recent_message_reaches_the_prompt_once(assistant: Assistant) -> None:
    await say(assistant, dm("I repaired the blue bicycle."))
    await say(assistant, dm("And then?"))
    assert assistant.engine.last_prompt_text().count("I repaired the blue bicycle.") == 1


async def test_reopened_chat_is_answered_again(assistant: Assistant) -> None:
    await assistant.chat_closed("matrix", "!g")
    await assistant.chat_opened("matrix", "!g")
    assert await say(assistant, group("hello bot", "alice", chat_id="!g", platform="matrix")) is not None


async def test_memory_from_another_part_of_a_turn_does_not_hide_it(assistant: Assistant) -> None:
    from core.memory.recall import ChatContext
    from core.memory.records import Memory

    await say(assistant, dm("My name is Dana and I am reading about volcanoes."))
    assistant.store.settle()  # recall reads LanceDB, and the turns were staged a moment ago
    [turn] = [t for t in assistant.store.turns_of("dana") if t.role == "user"]
    assistant.store.save_memories([Memory("dana", "fact", "Is called Dana", "m-name", [turn.id])])
    [vector] = assistant.store.embed(["what am I reading about"])
    items = assistant.recall.recall(
        assistant.store.person("dana"),
        ChatContext("console", "dana", "direct"),
        vector,
        query_text="what am I reading about",
    )
    assert any("volcanoes" in i.text for i in items), [(i.text, i.score) for i in items]


async def test_recent_window_slides_by_half_so_the_prompt_start_stays_put(assistant: Assistant) -> None:
    from core.assistant import RECENT_KEEP, RECENT_TURNS

    for i in range(30):
        await say(assistant, dm(f"n{i}", chat_id="long"))
    firsts = [prompt[1]["content"] for prompt in assistant.engine.prompts]
    sizes = [len(prompt) - 2 for prompt in assistant.engine.prompts]  # minus system and new message
    assert max(sizes) <= RECENT_TURNS and min(sizes[20:]) >= RECENT_KEEP - 1
    # once full, the window's first turn changes only every (RECENT_TURNS - RECENT_KEEP) / 2 messages
    changes = sum(a != b for a, b in zip(firsts[17:], firsts[18:], strict=False))
    assert 0 < changes <= 2


async def test_forgetting_drops_the_engines_prompt_prefixes(assistant: Assistant) -> None:
    await say(assistant, dm("My code word is quokka-5521."))
    await say(assistant, dm("/forget_me"))
    await say(assistant, dm("/forget_me confirm"))
    assert assistant.engine.prefixes_dropped >= 1
