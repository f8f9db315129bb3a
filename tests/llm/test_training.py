"""Adapter refresh on a tiny Llama and a real LanceDB store: data, gate, rollback, forgetting, locking."""

from __future__ import annotations

import asyncio
import threading

import pytest

from core.config import Settings
from core.llm.adapters import AdapterStore
from core.llm.engine import Engine
from core.llm.model import tiny_llama
from core.memory.records import Memory, Person, Turn, chat_scope
from workers.replay import Pair, replay_sets
from workers.training import (
    answer_nll,
    build_person_pairs,
    list_versions,
    memory_changed,
    questions_for,
    refresh_adapter,
    rollback,
    split_heldout,
    to_first_person,
    to_second_person,
)

FACTS = {
    "m1": "I'm training for the Berlin marathon.",
    "m2": "My dog is called Biscuit.",
    "m3": "I live in Lisbon.",
    "m4": "I'm allergic to peanuts.",
}


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        temperature=0.0,
        adapter_train_epochs=12,
        adapter_max_steps=1000,  # all 12 epochs: the tiny random model needs them to learn or harm
        adapter_min_new_items=1,
        persona="Be brief.",
        _env_file=None,
    )


@pytest.fixture
def store(settings, embedder):
    from core.memory.store import Store

    settings.ensure_data_dir()
    s = Store(settings.data_dir / "lancedb", embedder)
    s.save_person(Person("dana", "Dana"))
    s.save_person(Person("eve", "Eve"))
    s.save_memories([Memory("dana", "fact", text, mid) for mid, text in FACTS.items()])
    s.save_memories(
        [
            Memory("eve", "fact", "I'm training for the Tokyo marathon.", "e1"),
            Memory(
                "dana",
                "fact",
                "I'm hiding a surprise party for Tom.",
                "g1",
                visibility=chat_scope("slack", "C1"),
            ),
        ]
    )
    return s


@pytest.fixture(scope="module")
def model():
    """Big enough to memorise a few answers in seconds; its own copy (training never mutates it)."""
    return tiny_llama(hidden_size=96, layers=2, heads=4, kv_heads=2, seed=3)


def test_statements_become_second_person_answers_and_questions():
    assert (
        to_second_person("I'm training for the Berlin marathon.")
        == "You're training for the Berlin marathon."
    )
    assert to_second_person("My dog is called Biscuit") == "Your dog is called Biscuit."
    assert to_first_person("Dana likes tea", "Dana") == "I like tea"
    assert to_first_person("Lives in Berlin") == "I live in Berlin"
    assert to_first_person("Dana's sister is Mia", "Dana") == "My sister is Mia"
    assert "What am I training for?" in questions_for("I'm training for the Berlin marathon.")
    assert "What is my dog called?" in questions_for("My dog is called Biscuit.")
    assert "Which city do I live in?" in questions_for("I live in Lisbon.")
    assert "What am I allergic to?" in questions_for("I'm allergic to peanuts.")


def test_training_data_is_only_this_persons_private_current_data(store, settings):
    data = build_person_pairs("dana", store, settings)
    text = " ".join(p.question + " " + p.answer for _, p in data.pairs)
    assert "Berlin" in text and "Biscuit" in text
    assert "Tokyo" not in text, "another person's words"
    assert "surprise party" not in text, "a group-scoped memory in a private adapter"
    assert set(data.sources) == set(FACTS)
    allowed = build_person_pairs(
        "dana", store, settings.model_copy(update={"adapter_include_group_memories": True})
    )
    assert "g1" in allowed.sources


def test_each_fact_is_taught_in_several_wordings_and_a_whole_wording_is_held_out(store, settings):
    data = build_person_pairs("dana", store, settings)
    marathon = [p for source, p in data.pairs if source == "m1"]
    wordings = {p.group for p in marathon}
    assert len(wordings) >= 4, "one wording teaches the string, not the fact"
    assert {p.answer for p in marathon} >= {
        "You're training for the Berlin marathon.",
        "You told me you're training for the Berlin marathon.",
    }
    recall_layout = [p for p in marathon if p.source == "memory-recall"]
    assert len(recall_layout) == 1 and "What you know about me:" in recall_layout[0].question
    for _, p in data.pairs:  # the recalled block lists this person's private memories only
        assert "Tokyo" not in p.question and "surprise party" not in p.question

    train, held = split_heldout(data)
    assert held and all(p.source == "memory" for p in held)
    held_groups = {p.group for p in held}
    assert not held_groups & {p.group for p in train}, "a held-out wording (or a variant) was trained on"
    assert len({p.group.split(":")[0] for p in held}) == len(FACTS), "one wording per fact"
    # every held-out wording is asked plainly and in a chat-like variant
    assert all(sum(p.group == g for p in held) == 2 for g in held_groups)


def test_accepted_replies_are_used_and_corrected_ones_are_not(store, settings):
    turns = [
        ("1", "user", "Can you suggest a stretch for tight calves?"),
        ("1", "assistant", "Try a wall calf stretch, thirty seconds each side."),
        ("2", "user", "Thanks!"),
        ("3", "user", "What's a good pace for my long run?"),
        ("3", "assistant", "Sprint the whole way."),
        ("4", "user", "No, that's wrong."),
    ]
    store.add_turns([Turn("dana", "console", "dana", mid, role, text) for mid, role, text in turns])
    answers = [p.answer for _, p in build_person_pairs("dana", store, settings).pairs]
    assert "Try a wall calf stretch, thirty seconds each side." in answers
    assert "Sprint the whole way." not in answers


def _answer_nll(loaded, settings, version_path, question, answer) -> float:
    from peft import PeftModel

    from core.llm.adapters import plain_copy

    peft_model = PeftModel.from_pretrained(plain_copy(loaded.model), version_path)
    return answer_nll(
        peft_model,
        loaded.tokenizer,
        [Pair(question, answer)],
        settings.persona,
        loaded.tokenizer.eos_token_id,
    )


def test_refresh_promotes_then_rollback_and_listing(store, settings, model):
    first = refresh_adapter("dana", store, settings, loaded=model)
    assert first.status == "promoted", first
    assert first.scores["heldout_nll_after"] < first.scores["heldout_nll_before"]
    assert first.scores["general_ppl_change"] <= settings.adapter_ppl_tolerance
    adapters = AdapterStore(settings)
    assert adapters.current_name("dana") == first.version
    assert store.person("dana").adapter_version == first.version

    store.save_memories([Memory("dana", "fact", "I play the cello in a band.", "m5")])
    second = refresh_adapter("dana", store, settings, loaded=model)
    assert second.status == "promoted", second
    rows = list_versions("dana", settings)
    assert [(r["version"], r["status"]) for r in rows] == [("v0001", "previous"), ("v0002", "current")]
    assert rows[1]["train_size"] > 0 and rows[1]["heldout_nll_after"] is not None

    back = rollback("dana", settings)
    assert back.version == "v0001" and adapters.current_name("dana") == "v0001"
    assert [r["status"] for r in list_versions("dana", settings)] == ["current", "rolled_back"]
    with pytest.raises(ValueError, match="no earlier"):
        rollback("dana", settings)

    skipped = refresh_adapter(
        "dana", store, settings.model_copy(update={"adapter_min_new_items": 50}), loaded=model
    )
    assert skipped.status == "skipped"


def test_gate_rejects_an_adapter_that_always_says_one_phrase(store, settings, model):
    harmful = [Pair(q.question, "BANANA BANANA BANANA BANANA.") for q in replay_sets()[0][:80]]
    result = refresh_adapter(
        "dana",
        store,
        settings.model_copy(  # only harm
            update={"adapter_replay_ratio": 0.0, "adapter_min_replay": 0, "adapter_context_share": 0.0}
        ),
        loaded=model,
        override_pairs=harmful,
    )
    assert result.status == "rejected", result
    assert result.reason
    adapters = AdapterStore(settings)
    assert adapters.current_name("dana") is None, "a rejected version is never served"
    assert [r["status"] for r in list_versions("dana", settings)] == ["rejected"]


def test_forgetting_a_fact_removes_it_from_the_next_adapter(store, settings, model):
    q, a = "What am I training for?", "You're training for the Berlin marathon."
    first = refresh_adapter("dana", store, settings, loaded=model)
    assert first.status == "promoted", first
    adapters = AdapterStore(settings)
    learned = _answer_nll(model, settings, adapters.serving_path("dana"), q, a)

    engine = Engine(model, settings)
    try:
        said = asyncio.run(
            engine.generate(
                [{"role": "system", "content": settings.persona}, {"role": "user", "content": q}],
                adapter="dana",
                max_new_tokens=12,
            )
        )
    finally:
        engine.close()

    store.delete_memories(["m1"])  # what /forget does to the memory
    dropped = memory_changed("dana", store, settings)
    assert dropped == [first.version]
    assert adapters.serving_path("dana") is None, "the adapter that learned it is no longer served"
    assert not (adapters.person_dir("dana") / "versions" / first.version).exists(), (
        "and its weights are deleted"
    )

    second = refresh_adapter("dana", store, settings, loaded=model)
    assert second.status == "promoted", second
    forgotten = _answer_nll(model, settings, adapters.serving_path("dana"), q, a)
    assert forgotten > learned + 1.0, (learned, forgotten)
    if "Berlin" in said:  # when the tiny model learned the answer verbatim, it must be gone now
        engine = Engine(model, settings)
        try:
            again = asyncio.run(
                engine.generate(
                    [{"role": "system", "content": settings.persona}, {"role": "user", "content": q}],
                    adapter="dana",
                    max_new_tokens=12,
                )
            )
        finally:
            engine.close()
        assert "Berlin" not in again


def test_two_refreshes_at_once_cannot_both_promote(store, settings, model):
    results = {}

    def second_refresh():
        results["second"] = refresh_adapter("dana", store, settings, loaded=model)

    started = threading.Event()

    def progress(stage: str, step: int, total: int) -> None:
        if not started.is_set():  # the first refresh holds the lock now: start another
            started.set()
            thread = threading.Thread(target=second_refresh)
            thread.start()
            thread.join()

    results["first"] = refresh_adapter("dana", store, settings, loaded=model, progress=progress)
    assert results["first"].status == "promoted"
    assert results["second"].status == "busy"
    assert len(list_versions("dana", settings)) == 1


def test_adapter_cli_lists_versions_and_explains_a_refused_rollback(store, settings, model, monkeypatch):
    import typer
    from typer.testing import CliRunner

    import app.adapter_cli as cli
    from app import people

    monkeypatch.setattr(people, "open_cli_store", lambda _settings: store)
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    app = typer.Typer()
    app.add_typer(cli.adapter_app, name="adapter")
    runner = CliRunner()
    empty = runner.invoke(app, ["adapter", "list", "--person", "dana"])
    assert empty.exit_code == 0 and "No adapter yet" in empty.output
    assert refresh_adapter("dana", store, settings, loaded=model).status == "promoted"
    listed = runner.invoke(app, ["adapter", "list", "--person", "dana"], terminal_width=200)
    assert listed.exit_code == 0 and "v0001" in listed.output and "current" in listed.output
    refused = runner.invoke(app, ["adapter", "rollback", "--person", "dana"])
    assert refused.exit_code == 1
    missing = runner.invoke(app, ["adapter", "list", "--person", "nobody"])
    assert missing.exit_code == 1


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_shared_prefix_answer_logits_give_the_full_forward_loss_and_gradients(model, attention):
    """Training runs the common system prompt once per batch and scores answer tokens only: the
    loss and the LoRA gradients must be those of a plain full forward with labels (with the
    serving attention kernel and with the eager one training uses on CPU)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from core.llm.adapters import plain_copy
    from workers.training import _batches, _encode, answer_logits

    tok = model.tokenizer
    pairs = replay_sets()[0][:6]
    encoded = [_encode(tok, "Be brief and kind.", p, tok.eos_token_id) for p in pairs]
    ids, labels, mask = _batches(encoded, 6, tok.pad_token_id, None)[0]
    assert ids.shape[0] == 6 and (mask == 0).any()  # rows of different lengths, padded
    config = LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False)
    copy = plain_copy(model.model)
    copy.set_attn_implementation(attention)
    peft_model = get_peft_model(copy, config)
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]

    full = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
    full_grads = torch.autograd.grad(full, params)
    logits, target = answer_logits(peft_model, ids, labels, mask)
    assert logits.shape[0] == int((labels[:, 1:] != -100).sum())  # answer positions only
    ours = torch.nn.functional.cross_entropy(logits, target)
    our_grads = torch.autograd.grad(ours, params)

    assert abs(float(full) - float(ours)) < 1e-4
    for a, b in zip(full_grads, our_grads, strict=True):
        # float noise is relative to the tensor's scale, not to each (possibly tiny) element
        assert float((a - b).abs().max()) <= 1e-4 * float(a.abs().max()), (a - b).abs().max()


def test_made_up_recall_examples_answer_from_the_shown_lines():
    """The recall-reading examples mixed into training: inline layout, answer found in the lines."""
    from workers.replay import context_pairs

    pairs = context_pairs(12, seed=1)
    assert len(pairs) == 12 and pairs == context_pairs(12, seed=1)  # the same data each run
    for p in pairs:
        block, question = p.question.rsplit("\n\n", 1)
        assert block.startswith("(What you know about me:\n") and question.endswith("?")
        value = p.answer.rstrip(".").split(" ")[-1]
        assert value in block, (value, block)
