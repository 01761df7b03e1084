"""SAELens-layout export, load_sae round trips, and train_and_export end to end."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mistudio.errors import InvalidInput
from mistudio.sae import CommitRefused, SyntheticFeatures, Trainer, TrainingConfig, load_sae, train_and_export

ARCH_KW = {"topk": dict(k=4), "batchtopk": dict(k=4), "relu": dict(l1_coefficient=2.0), "jumprelu": dict(l0_coefficient=1.0)}
SAELENS_NAME = {"topk": "topk", "batchtopk": "jumprelu", "relu": "standard", "jumprelu": "jumprelu"}


def config(architecture="topk", **kw):
    base = dict(
        hook_point="blocks.1.hook_resid_post", model="tiny-test-model", architecture=architecture, d_sae=64,
        batch_size=32, steps=12, lr=3e-3, log_every=4, checkpoint_every=5, device="cpu", **ARCH_KW[architecture],
    )
    return TrainingConfig(**{**base, **kw})


def data():
    return SyntheticFeatures(n_features=32, d=16, batch_size=32, seed=2)


def raw_batch():
    return data().sample(99) * 7.0 + 0.5  # raw units: the training scale must be folded correctly


@pytest.mark.parametrize("architecture", list(ARCH_KW))
def test_train_and_export_exports_an_identical_model(tmp_path, architecture):
    seen = []
    metrics = train_and_export(config(architecture), tmp_path, data(), on_progress=seen.append)
    export = tmp_path / "sae"
    assert {p.name for p in export.iterdir()} == {"cfg.json", "sae_weights.safetensors", "sparsity.safetensors"}
    cfg = json.loads((export / "cfg.json").read_text())
    assert cfg["architecture"] == SAELENS_NAME[architecture]
    assert (cfg["d_in"], cfg["d_sae"], cfg["dtype"]) == (16, 64, "float32")
    assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post" and cfg["metadata"]["model_name"] == "tiny-test-model"
    assert cfg["metadata"]["sae_lens_version"] >= "6"
    if architecture == "topk":
        assert cfg["k"] == 4
    weights = load_file(export / "sae_weights.safetensors")
    expected = {"W_enc", "b_enc", "W_dec", "b_dec"} | ({"threshold"} if cfg["architecture"] == "jumprelu" else set())
    assert set(weights) == expected
    assert weights["W_enc"].shape == (16, 64) and weights["W_dec"].shape == (64, 16)
    sparsity = load_file(export / "sparsity.safetensors")["sparsity"]
    assert sparsity.shape == (64,) and float(sparsity.max()) <= 0.0

    x = raw_batch()
    exported, from_checkpoint, from_run = load_sae(export), load_sae(tmp_path / "checkpoints" / "step_000000012"), load_sae(tmp_path)
    trainer = Trainer.resume(tmp_path)
    reference = trainer.reconstruct(x)
    for sae in (exported, from_checkpoint, from_run):
        assert type(sae).architecture == architecture
        torch.testing.assert_close(sae(x), reference, rtol=1e-5, atol=1e-5)
    assert torch.equal(exported.encode(x), from_checkpoint.encode(x))
    for name, value in exported.state_dict().items():
        assert torch.equal(value, from_run.state_dict()[name]), name
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [4, 8, 12] == [m["step"] for m in seen]
    assert metrics["step"] == 12 and metrics["export_dir"] == str(export)


def test_train_and_export_resumes_and_is_idempotent(tmp_path):
    cfg = config()
    stop_at = {"step": 7}
    state = {}

    def should_stop():
        return state.get("step", 0) >= stop_at["step"]

    first = train_and_export(cfg, tmp_path, data(), on_progress=lambda m: state.update(step=m["step"]), should_stop=should_stop)
    assert first["stopped"] is True and not (tmp_path / "sae").exists()
    stop_at["step"] = 10**9
    second = train_and_export(cfg, tmp_path, data())
    assert second["step"] == 12 and (tmp_path / "sae" / "cfg.json").exists()
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [4, 8, 12]  # history rewound to the checkpoint (step 5), no duplicates
    uninterrupted = tmp_path.parent / (tmp_path.name + "-full")
    train_and_export(cfg, uninterrupted, data())
    for name, value in load_sae(tmp_path).state_dict().items():
        assert torch.equal(value, load_sae(uninterrupted).state_dict()[name]), name
    again = train_and_export(cfg, tmp_path, data())  # a redelivered, finished job: re-export only
    assert again["step"] == 12 and again["stopped"] is False


def test_train_and_export_refuses_a_different_config_in_the_same_run_dir(tmp_path):
    train_and_export(config(), tmp_path, data())
    with pytest.raises(InvalidInput) as info:
        train_and_export(config(lr=1e-3), tmp_path, data())
    assert info.value.field == "run_dir"


def test_export_is_fenced(tmp_path):
    with pytest.raises(CommitRefused):
        train_and_export(config(), tmp_path, data(), before_commit=lambda step: step < 12)
    assert not (tmp_path / "sae").exists()


def test_load_sae_names_what_is_missing(tmp_path):
    with pytest.raises(InvalidInput) as info:
        load_sae(tmp_path)
    assert info.value.field == "path"
