"""Model loading: clear errors for bad settings, and the bundled model end to end (slow)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.config import Settings
from core.llm.model import ModelLoadError, bundled_cache_dir, load_model


def test_missing_local_path_says_what_to_set(tmp_path):
    with pytest.raises(ModelLoadError, match="CONFIDANTE_MODEL") as err:
        load_model(Settings(data_dir=tmp_path, model=str(tmp_path / "no-such-model")))
    assert "no such directory" in str(err.value)


def test_directory_that_is_not_a_model_is_refused(tmp_path):
    (tmp_path / "notes").mkdir()
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(Settings(data_dir=tmp_path, model=str(tmp_path / "notes")))


def test_unreachable_hub_id_says_to_use_a_local_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network here; make the hub refuse at once
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelLoadError) as err:
        load_model(Settings(data_dir=tmp_path, model="someone/not-downloaded-model"))
    message = str(err.value)
    assert "CONFIDANTE_MODEL" in message and "local" in message


def test_local_directory_loads(tiny_model, tmp_path):
    tiny_model.model.save_pretrained(tmp_path / "m")
    tiny_model.tokenizer.save_pretrained(tmp_path / "m")
    loaded = load_model(Settings(data_dir=tmp_path, model=str(tmp_path / "m"), dtype="float32"))
    assert loaded.eos_token_ids >= {tiny_model.tokenizer.eos_token_id}
    assert loaded.model.config.num_hidden_layers == tiny_model.model.config.num_hidden_layers


@pytest.mark.slow
def test_bundled_model_converts_once_then_loads_from_cache(tmp_path):
    """Convert in a child process that is killed midway (no half cache), then convert, then reload."""
    env = {**os.environ, "CONFIDANTE_DATA_DIR": str(tmp_path), "PYTHONPATH": str(Path.cwd())}
    code = "from core.config import Settings; from core.llm.model import load_model; load_model(Settings())"
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL)
    time.sleep(6)
    child.kill()
    child.wait()
    settings = Settings(data_dir=tmp_path)
    cache = bundled_cache_dir(settings)
    assert not cache.exists(), "a killed conversion must not leave a cache that looks finished"

    loaded = load_model(settings)
    assert (cache / "model.safetensors").exists()
    assert "<|im_end|>" in loaded.tokenizer.convert_ids_to_tokens(sorted(loaded.eos_token_ids))

    start = time.perf_counter()
    again = load_model(settings)
    assert time.perf_counter() - start < 20  # order of magnitude only; bench/llm_bench.py times it
    import asyncio

    from core.llm.engine import Engine

    engine = Engine(again, Settings(data_dir=tmp_path, temperature=0))
    reply = asyncio.run(
        engine.generate([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=24)
    )
    engine.close()
    assert "Paris" in reply
