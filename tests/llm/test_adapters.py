"""Per-person adapters: on-disk versions, the LRU registry, and batched mixed-adapter serving."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import torch

from core.config import Settings
from core.llm.adapters import AdapterRegistry, AdapterStore, person_key
from core.llm.engine import Engine
from core.llm.model import tiny_llama

HELLO = [{"role": "user", "content": "Hello, how are you today?"}]


def make_peft_adapter(base_model, path: Path, seed: int, rank: int = 4) -> None:
    """A random (non-zero) PEFT LoRA adapter saved the way training saves it."""
    import copy

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=False,
    )
    peft_model = get_peft_model(copy.deepcopy(base_model), cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.mul_(3.0)
    peft_model.save_pretrained(path)


@pytest.fixture(scope="module")
def fresh():
    """Its own tiny model: the registry wraps projections in place, the shared fixture stays clean."""
    return tiny_llama(seed=1)


@pytest.fixture(scope="module")
def adapter_dirs(fresh, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    dirs = []
    for i in range(3):
        make_peft_adapter(fresh.model, root / f"a{i}", seed=100 + i)
        dirs.append(root / f"a{i}")
    return dirs


def test_batched_lora_matches_peft_per_row(fresh, adapter_dirs, tmp_path):
    """One forward with rows on adapter 0, none, adapter 1 equals PEFT run row by row."""
    import copy

    from peft import PeftModel

    reference = copy.deepcopy(fresh.model)
    peft_model = PeftModel.from_pretrained(reference, adapter_dirs[0], adapter_name="a0")
    peft_model.load_adapter(adapter_dirs[1], adapter_name="a1")

    model = copy.deepcopy(fresh.model)
    reg = AdapterRegistry(model, Settings(data_dir=tmp_path), max_loaded=4)
    reg.register("p0", adapter_dirs[0])
    reg.register("p1", adapter_dirs[1])
    s0, s1 = reg.acquire("p0"), reg.acquire("p1")
    assert s0 > 0 and s1 > 0 and s0 != s1
    ids = fresh.tokenizer(["The quick brown fox"] * 3, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        reg.set_rows([s0, -1, s1])
        ours = model(input_ids=ids).logits
        reg.set_rows([-1, -1, -1])
        base = model(input_ids=ids[:1]).logits
        expected = []
        for row, name in zip(range(3), ["a0", None, "a1"], strict=True):
            if name is None:
                with peft_model.disable_adapter():
                    expected.append(peft_model(input_ids=ids[row : row + 1]).logits)
            else:
                peft_model.set_adapter(name)
                expected.append(peft_model(input_ids=ids[row : row + 1]).logits)
    torch.testing.assert_close(ours, torch.cat(expected), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(base, expected[1], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(expected[0], expected[1], atol=1e-3), "the adapter must change the output"


async def test_mixed_adapter_batch_equals_each_solo_run(fresh, adapter_dirs, tmp_path):
    import copy

    loaded = copy.copy(fresh)
    loaded.model = copy.deepcopy(fresh.model)
    settings = Settings(data_dir=tmp_path, temperature=0)
    engine = Engine(loaded, settings)
    for i, d in enumerate(adapter_dirs):
        engine.adapters.register(f"p{i}", d)
    people = ["p0", None, "p1", "p2"]
    try:
        solo = [await engine.generate(HELLO, adapter=p, max_new_tokens=12) for p in people]
        assert len(set(solo)) == 4, "each adapter (and the base) answers differently"
        steps_before = engine.stats.steps
        together = await asyncio.gather(
            *[engine.generate(HELLO, adapter=p, max_new_tokens=12) for p in people]
        )
        assert together == solo
        assert engine.stats.steps - steps_before < 4 * 11, "the four replies shared decode steps"
    finally:
        engine.close()


def test_lru_evicts_least_recent_and_never_a_pinned_slot(fresh, adapter_dirs, tmp_path):
    import copy

    reg = AdapterRegistry(copy.deepcopy(fresh.model), Settings(data_dir=tmp_path), max_loaded=2)
    for i, d in enumerate(adapter_dirs):
        reg.register(f"p{i}", d)
    s0 = reg.acquire("p0")  # pinned (a running row)
    s1 = reg.acquire("p1")
    reg.release(s1)
    s2 = reg.acquire("p2")  # must evict p1, not the pinned p0
    assert s2 == s1
    assert reg.stats()["loaded"] == 2 and reg.loads == 3
    reg.release(s2)
    assert reg.acquire("p3_unknown") == -1  # no adapter: base model
    reg.release(s0)
    assert reg.acquire("p0") == s0 and reg.loads == 3  # still resident: no reload


def test_store_versions_switch_atomically_and_stale_falls_back(fresh, adapter_dirs, tmp_path):
    import shutil

    settings = Settings(data_dir=tmp_path)
    store = AdapterStore(settings)
    pid = "slack:T1:U'1 OR '1'='1"
    assert store.serving_path(pid) is None
    name, tmp = store.new_version_dir(pid)
    for f in adapter_dirs[0].iterdir():
        shutil.copy(f, tmp / f.name)
    assert store.versions(pid) == []  # not visible until committed
    version = store.commit_version(pid, name, tmp, {"status": "candidate", "train_size": 3})
    assert store.serving_path(pid) is None  # committed is not current
    store.set_current(pid, version.version)
    assert store.serving_path(pid) == tmp_path / "adapters" / person_key(pid) / "versions" / "v0001"
    assert [v.status for v in store.versions(pid)] == ["current"]
    store.mark_stale(pid, "forgot a memory")
    assert store.serving_path(pid) is None
    store.set_current(pid, version.version)  # a retrain clears it
    assert store.serving_path(pid) is not None
    # the registry follows the store: a person id resolves to their current version
    reg = AdapterRegistry(fresh.model.__class__(fresh.model.config), settings)
    assert reg.acquire(pid) > 0
    assert json.loads((version.path / "meta.json").read_text())["train_size"] == 3


def test_two_trainers_cannot_hold_the_lock_together(tmp_path):
    store = AdapterStore(Settings(data_dir=tmp_path))
    with store.training_lock("dana") as first:
        with store.training_lock("dana") as second:
            assert first and not second
        with store.training_lock("someone-else") as other:
            assert other


def test_damaged_adapter_serves_the_base_model(fresh, tmp_path):
    import copy

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text("{not json")
    (bad / "adapter_model.safetensors").write_bytes(b"garbage")
    reg = AdapterRegistry(copy.deepcopy(fresh.model), Settings(data_dir=tmp_path))
    reg.register("p", bad)
    assert reg.acquire("p") == -1


@pytest.mark.gpu
async def test_mixed_adapter_batch_on_cuda(fresh, adapter_dirs, tmp_path):
    """The same engine and batched LoRA on a GPU (run on a lent GPU machine; CI skips it)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    import copy

    loaded = copy.copy(fresh)
    loaded.model = copy.deepcopy(fresh.model).to("cuda")
    loaded.device = "cuda"
    engine = Engine(loaded, Settings(data_dir=tmp_path, temperature=0))
    for i, d in enumerate(adapter_dirs):
        engine.adapters.register(f"p{i}", d)
    people = ["p0", None, "p1", "p2"]
    try:
        solo = [await engine.generate(HELLO, adapter=p, max_new_tokens=12) for p in people]
        together = await asyncio.gather(
            *[engine.generate(HELLO, adapter=p, max_new_tokens=12) for p in people]
        )
        assert together == solo and len(set(solo)) == 4
    finally:
        engine.close()
