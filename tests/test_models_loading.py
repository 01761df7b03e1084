"""load_model and model_metadata on the bundled MiniLM and a tiny GPT-2 saved to disk (all offline)."""

from __future__ import annotations

import json
import time

import pytest
import torch
from ml_helpers import minilm, mistudio_home, tiny_config, tiny_gpt2, tiny_gpt2_dir  # noqa: F401  (fixtures)

from mistudio.errors import InvalidInput
from mistudio.models import load_model, model_metadata


def test_bundled_default_loads_offline_in_eval_mode(minilm):
    assert minilm.name == "all-MiniLM-L6-v2"
    assert minilm.device == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert not minilm.model.training
    assert not any(p.requires_grad for p in minilm.model.parameters())
    meta = minilm.metadata
    assert json.loads(json.dumps(meta)) == meta  # cached in Redis as JSON
    assert meta["architecture"] == "BertModel" and meta["model_type"] == "bert"
    assert (meta["n_layers"], meta["d_model"], meta["vocab_size"], meta["max_context"]) == (6, 384, 30522, 512)
    assert meta["has_lm_head"] is False and meta["is_causal"] is False
    assert meta["dtype"] == "float32" and meta["n_params"] == 22_713_216
    assert meta["hook_points"][0] == "blocks.0.hook_resid_pre" and len(meta["hook_points"]) == 24


@pytest.mark.parametrize("alias", ["minilm", "all-MiniLM-L6-v2"])
def test_aliases_name_the_bundled_model(alias):
    from mistudio.models.loading import bundled_model_path, resolve_model_path

    assert resolve_model_path(alias) == ("all-MiniLM-L6-v2", bundled_model_path())


def test_local_causal_lm_gets_its_lm_head(tiny_gpt2, tiny_gpt2_dir):
    assert type(tiny_gpt2.model).__name__ == "GPT2LMHeadModel"
    meta = tiny_gpt2.metadata
    assert meta["has_lm_head"] and meta["is_causal"] and meta["n_layers"] == 2 and meta["d_model"] == 64
    assert tiny_gpt2.tokenizer.eos_token == "<|endoftext|>"
    ids = tiny_gpt2.tokenizer("def f(x): return x", return_tensors="pt")["input_ids"]
    assert tiny_gpt2.model(input_ids=ids).logits.shape == (1, ids.shape[1], meta["vocab_size"])
    # Metadata from the config alone (no weights) agrees with the loaded model, n_params included.
    from transformers import AutoConfig

    from_config = model_metadata(AutoConfig.from_pretrained(tiny_gpt2_dir))
    for key in ("n_params", "n_layers", "d_model", "d_mlp", "vocab_size", "has_lm_head", "max_context", "hook_points"):
        assert from_config[key] == meta[key], key


def test_dtype_option(tiny_gpt2_dir):
    model = load_model(str(tiny_gpt2_dir), device="cpu", dtype="bf16")
    assert model.metadata["dtype"] == "bfloat16"
    assert next(model.model.parameters()).dtype == torch.bfloat16


def test_metadata_of_a_config_without_weights():
    meta = model_metadata(tiny_config("llama"))
    assert meta["is_causal"] and meta["d_mlp"] == 128 and meta["n_params"] > 0 and meta["dtype"] == "float32"


def test_unknown_hub_id_offline_names_value_and_alternatives(mistudio_home):
    started = time.monotonic()
    with pytest.raises(InvalidInput) as err:
        load_model("nobody-here/not-a-model")
    assert time.monotonic() - started < 20  # fails fast, no long retry loop
    message = str(err.value)
    assert err.value.field == "model" and "'nobody-here/not-a-model'" in message
    assert "local folder" in message and "bundled" in message and "hub id" in message


def test_bad_paths_and_options(tmp_path, mistudio_home):
    with pytest.raises(InvalidInput, match="'/no/such/folder' is neither"):
        load_model("/no/such/folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="without config.json"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(InvalidInput, match="dtype: unknown dtype 'float8'"):
        load_model(dtype="float8")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInput, match="device: CUDA is not available"):
            load_model(device="cuda")
    with pytest.raises(InvalidInput, match="device: 'gpu0' is not a device"):
        load_model(device="gpu0")
