"""TrainingConfig: defaults from the profile, JSON round trip, bad input named with a fix."""

from __future__ import annotations

import json

import pytest

from mistudio.errors import InvalidInput
from mistudio.sae import TrainingConfig
from mistudio.settings import get_settings

HP = "blocks.3.hook_resid_post"


def test_defaults_come_from_the_profile():
    profile = get_settings().profile  # conftest sets MISTUDIO_PROFILE=ci
    cfg = TrainingConfig(hook_point=HP)
    assert cfg.architecture == "topk"
    assert cfg.k == profile.topk_k and cfg.batch_size == profile.batch_size
    assert cfg.expansion_factor == profile.expansion_factor
    assert cfg.total_tokens >= profile.train_tokens and cfg.steps == -(-profile.train_tokens // profile.batch_size)
    assert cfg.log_every == profile.log_every and cfg.checkpoint_every == profile.checkpoint_every
    assert cfg.with_d_in(384).d_sae == profile.expansion_factor * 384


def test_json_round_trip():
    cfg = TrainingConfig(hook_point=HP, architecture="jumprelu", d_in=64, expansion_factor=4, steps=100, lr=1e-3)
    data = json.loads(json.dumps(cfg.model_dump(mode="json")))
    again = TrainingConfig.model_validate(data)
    assert again == cfg
    assert TrainingConfig.model_validate_json(cfg.model_dump_json()) == cfg
    assert again.d_sae == 256 and again.l0_coefficient == 1.0 and again.k is None


@pytest.mark.parametrize(
    "kwargs, field, words",
    [
        (dict(architecture="gated"), "architecture", "relu, topk, batchtopk, jumprelu"),
        (dict(k=0), "k", "> 0"),
        (dict(k=-3), "k", "> 0"),
        (dict(k=100, d_sae=64), "k", "larger than d_sae"),
        (dict(k=100, d_in=8, expansion_factor=4), "k", "larger than d_sae"),
        (dict(lr=0), "lr", "positive"),
        (dict(lr=-1e-3), "lr", "positive"),
        (dict(lr="fast"), "lr", "number"),
        (dict(batch_size=0), "batch_size", "> 0"),
        (dict(hook_point=""), "hook_point", "blocks.{L}"),
        (dict(hook_point="layer three"), "hook_point", "blocks.{L}"),
        (dict(architecture="relu", k=32), "k", "only applies to topk or batchtopk"),
        (dict(architecture="relu", l1_coefficient=-1.0), "l1_coefficient", "positive"),
        (dict(architecture="topk", l1_coefficient=1.0), "l1_coefficient", "only applies to relu"),
        (dict(architecture="jumprelu", l0_coefficient=0.0), "l0_coefficient", "positive"),
        (dict(d_sae=0), "d_sae", "> 0"),
        (dict(d_in=16, d_sae=100, expansion_factor=4), "d_sae", "not both"),
        (dict(total_tokens=0), "total_tokens", "> 0"),
        (dict(total_tokens=1000, steps=3, batch_size=64), "steps", "not both"),
        (dict(steps=10, lr_warmup_steps=8, lr_decay_steps=5), "lr_decay_steps", "exceed steps"),
        (dict(log_every=0), "log_every", "> 0"),
        (dict(checkpoint_every=-5), "checkpoint_every", "> 0"),
        (dict(device="tpu"), "device", "'cuda'"),
        (dict(learning_rate=1e-3), "learning_rate", "did you mean 'lr'"),
        (dict(dtype="int8"), "dtype", "float32"),
    ],
)
def test_invalid_configs_are_rejected_with_the_field_and_a_fix(kwargs, field, words):
    with pytest.raises(InvalidInput) as info:
        TrainingConfig(**{"hook_point": HP, **kwargs})
    assert info.value.field == field
    assert words in str(info.value)
    assert info.value.fix


def test_missing_hook_point():
    with pytest.raises(InvalidInput) as info:
        TrainingConfig.model_validate({"architecture": "topk"})
    assert info.value.field == "hook_point" and "required" in info.value.problem.lower()


def test_k_rechecked_once_d_in_is_known():
    cfg = TrainingConfig(hook_point=HP, k=64, expansion_factor=2)
    with pytest.raises(InvalidInput) as info:
        cfg.with_d_in(16)
    assert info.value.field == "k"
    with pytest.raises(InvalidInput) as info:
        TrainingConfig(hook_point=HP, d_in=32).with_d_in(64)
    assert info.value.field == "d_in"


def test_the_default_learning_rate_scales_as_one_over_sqrt_width_once_the_width_is_known():
    unknown = TrainingConfig(hook_point=HP, expansion_factor=8)
    assert unknown.lr is None  # no width yet: nothing to scale by
    lr_3072 = unknown.with_d_in(384).lr
    lr_12288 = TrainingConfig(hook_point=HP, d_in=384, expansion_factor=32).lr
    assert lr_3072 == pytest.approx(2 * lr_12288)  # 4x the latents: half the lr
    assert TrainingConfig(hook_point=HP, d_in=16, d_sae=64).lr == TrainingConfig(hook_point=HP, d_in=64, d_sae=1024).lr
    assert TrainingConfig(hook_point=HP, d_in=384, lr=1e-4).lr == 1e-4  # a given lr is kept
    dumped = TrainingConfig(hook_point=HP, d_in=384, expansion_factor=8).model_dump(mode="json")
    assert TrainingConfig.model_validate(dumped).lr == dumped["lr"] == lr_3072  # the worker sees what the user saw


def test_the_default_lr_and_adam_betas_are_the_architectures():
    def recipe(architecture, **fields):
        cfg = TrainingConfig(hook_point=HP, d_in=384, d_sae=3072, architecture=architecture, **fields)
        return round(cfg.lr, 6), cfg.adam_beta1, cfg.adam_beta2

    # TopK-style: the tuned recipe, lr scaled with the width; penalty-trained: their own, at every width.
    assert recipe("topk") == recipe("batchtopk") == (0.009007, 0.8, 0.99)
    assert recipe("relu") == recipe("jumprelu") == (0.005, 0.9, 0.999)
    assert recipe("relu", lr=1e-3, adam_beta1=0.5) == (0.001, 0.5, 0.999)  # what a config gives is kept
    with pytest.raises(InvalidInput) as info:
        TrainingConfig(hook_point=HP, d_in=384, adam_beta2=1.0)
    assert info.value.field == "adam_beta2"


def test_the_encoder_init_and_penalty_warmup_are_the_architectures():
    def init(architecture, **fields):
        cfg = TrainingConfig(hook_point=HP, d_in=384, architecture=architecture, steps=300, **fields)
        return cfg.encoder_init_scale, cfg.sparsity_warmup_steps

    # A penalty-trained SAE starts with a small encoder and warms its penalty up over half the run.
    assert init("relu") == init("jumprelu") == (0.1, 150)
    assert init("topk") == init("batchtopk") == (1.0, 15)  # no penalty to warm up; 5% as before
    assert init("relu", encoder_init_scale=0.5, sparsity_warmup_steps=0) == (0.5, 0)
    assert TrainingConfig(hook_point=HP, d_in=384, architecture="relu", steps=5000).sparsity_warmup_steps == 1000
    with pytest.raises(InvalidInput) as info:
        TrainingConfig(hook_point=HP, d_in=384, encoder_init_scale=0.0)
    assert info.value.field == "encoder_init_scale"


def test_the_default_lr_decays_to_zero_over_everything_after_warmup():
    cfg = TrainingConfig(hook_point=HP, d_in=384, steps=977)
    assert cfg.lr_warmup_steps == 195 and cfg.lr_warmup_steps + cfg.lr_decay_steps == cfg.steps
    longer_warmup = TrainingConfig(hook_point=HP, d_in=384, steps=977, lr_warmup_steps=300)
    assert longer_warmup.lr_decay_steps == 977 - 300  # shortened to fit, not refused
    assert TrainingConfig(hook_point=HP, d_in=384, steps=100, lr_decay_fraction=0.2).lr_decay_steps == 20
