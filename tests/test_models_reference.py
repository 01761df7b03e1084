"""The offline reference causal LM: trained from a seed, saved in the Hugging Face format, resumable.

Builds here use a 2-layer, 32-wide config (seconds on a CPU); the sizes of the real model are a
setting, the code path is the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mistudio.errors import InvalidInput
from mistudio.models import load_model
from mistudio.models.folders import REFERENCE_NAME, inspect_model
from mistudio.data.packing import pack_documents
from mistudio.models.reference_config import CARD, ReferenceConfig, for_profile
from mistudio.reference_model import build_dir, build_reference, heldout_loss, split_corpus
from mistudio.sae.checkpoint import CommitRefused
from tests.ml_helpers import mistudio_home  # noqa: F401  (fixture)

SMALL = ReferenceConfig(vocab_size=512, n_layer=2, n_embd=32, n_head=2, context_length=32, batch_size=8, steps=24,
                        learning_rate=1e-2, warmup_steps=4, corpus_max_tokens=40_000, eval_every=8,
                        eval_tokens=2048, checkpoint_every=8)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(Path(folder) / "model.safetensors")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    return build_reference(SMALL, path=tmp_path_factory.mktemp("ref") / "model")


def test_same_seed_gives_the_same_weights_and_losses(built, tmp_path):
    again = build_reference(SMALL, path=tmp_path / "again")
    assert again["curve"] == built["curve"]
    first, second = weights(built["path"]), weights(again["path"])
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = build_reference(ReferenceConfig(**{**SMALL.__dict__, "seed": 1, "steps": 8}), path=tmp_path / "other")
    assert other["curve"][0]["loss"] != built["curve"][0]["loss"]


def test_loss_falls_on_training_and_held_out_text(built):
    curve = built["curve"]
    evals = [p["heldout_loss"] for p in curve if p["heldout_loss"] is not None]
    assert len(evals) == SMALL.steps // SMALL.eval_every
    assert curve[-1]["loss"] < curve[0]["loss"] - 0.5
    assert evals[-1] < evals[0] and evals[-1] < 6.0  # ln(512) = 6.24: better than a uniform guess
    assert built["heldout_perplexity"] == pytest.approx(2.718281828 ** evals[-1])


def test_saved_folder_loads_with_load_model_and_generates(built):
    loaded = load_model(built["path"])
    assert loaded.metadata["has_lm_head"] and loaded.metadata["is_causal"]
    assert type(loaded.model).__name__ == "GPT2LMHeadModel"
    ids = loaded.tokenizer("Return the", return_tensors="pt").input_ids
    out = loaded.model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=loaded.tokenizer.eos_token_id)
    assert out.shape[1] == ids.shape[1] + 8
    assert isinstance(loaded.tokenizer.decode(out[0]), str)
    # The saved weights and tokenizer are the trained ones: the folder reproduces the card's held-out loss.
    packed, _ = pack_documents(split_corpus()[1], loaded.tokenizer, SMALL.context_length, SMALL.eval_tokens)
    loss = heldout_loss(loaded.model, packed.input_ids, packed.attention_mask)
    assert loss == pytest.approx(built["heldout_loss"], rel=1e-4)
    assert (Path(built["path"]) / CARD).is_file()
    assert not build_dir(Path(built["path"])).exists()  # the checkpoints are gone once the model is committed


def test_the_alias_says_how_to_build_it_then_loads_it(mistudio_home):
    for load in (load_model, inspect_model):
        with pytest.raises(InvalidInput, match="build-reference") as err:
            load("reference")
        assert err.value.field == "model"
    build_reference(ReferenceConfig(**{**SMALL.__dict__, "steps": 8}))
    assert (mistudio_home / "models" / REFERENCE_NAME / "config.json").is_file()
    name, _, metadata = inspect_model("reference")
    assert name == REFERENCE_NAME and metadata["model_type"] == "gpt2" and metadata["hooks_supported"]
    assert load_model("reference").name == REFERENCE_NAME


def test_resume_after_a_stop_continues_the_loss_curve(built, tmp_path):
    path = tmp_path / "model"
    polls = []

    def stop_after_the_first_checkpoint() -> bool:
        polls.append(1)
        return len(polls) > 12  # polled before each step and before each checkpoint

    stopped = build_reference(SMALL, path=path, should_stop=stop_after_the_first_checkpoint)
    assert stopped["stopped"] and 8 < stopped["step"] < 16
    assert not path.exists()  # nothing that loads before the build is finished
    resumed = build_reference(SMALL, path=path)
    assert resumed["resumed_from"] == 8  # the last checkpoint before the stop
    assert resumed["curve"] == built["curve"]  # the same curve as an uninterrupted build
    first, second = weights(built["path"]), weights(path)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_refused_commit_leaves_no_model_behind(tmp_path):
    path = tmp_path / "model"
    with pytest.raises(CommitRefused):
        build_reference(ReferenceConfig(**{**SMALL.__dict__, "steps": 4}), path=path, before_commit=lambda step: False)
    assert not path.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_the_ci_profile_is_smaller_and_bad_settings_name_their_field(mistudio_home):
    ci = for_profile()
    assert ci.n_embd < ReferenceConfig().n_embd and ci.steps < ReferenceConfig().steps
    assert for_profile(seed=3).seed == 3
    with pytest.raises(InvalidInput, match="n_head"):
        for_profile(n_embd=64, n_head=3)
    with pytest.raises(InvalidInput, match="colour"):
        for_profile(colour=1)
