"""Trainer: exact resume, stop/fence callbacks, atomic checkpoints, honest metrics."""

from __future__ import annotations

import copy
import itertools
import json
import subprocess
import sys

import pytest
import torch

from mistudio.sae import CommitRefused, SyntheticFeatures, Trainer, TrainingConfig, latest_checkpoint, list_checkpoints
from mistudio.sae import checkpoint as ckpt
from mistudio.sae.metrics import DENSE_FIRING_FRACTION

ARCH_KW = {"topk": dict(k=4), "batchtopk": dict(k=4), "relu": dict(l1_coefficient=2.0), "jumprelu": dict(l0_coefficient=1.0)}


def small_config(architecture="topk", **kw) -> TrainingConfig:
    base = dict(
        hook_point="blocks.0.hook_resid_post", architecture=architecture, d_sae=96, batch_size=32, steps=24,
        lr=3e-3, lr_warmup_steps=4, lr_decay_steps=6, sparsity_warmup_steps=5, log_every=5,
        checkpoint_every=8, dead_window_tokens=96, device="cpu", seed=7, **ARCH_KW[architecture],
    )
    return TrainingConfig(**{**base, **kw})


def data():
    return SyntheticFeatures(n_features=48, d=24, batch_size=32, seed=1)


def plain_batches():
    """A plain generator (no state_dict): resume must fast-forward it by counting."""
    source = data()
    for i in itertools.count():
        yield source.sample(i)


def assert_same_training_state(a: Trainer, b: Trainer):
    for (name, p), q in zip(a.sae.state_dict().items(), b.sae.state_dict().values()):
        assert torch.equal(p, q), name
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    for i in sa:
        for key in sa[i]:
            assert torch.equal(sa[i][key], sb[i][key]), (i, key)
    assert torch.equal(a.firing.tokens_since_fired, b.firing.tokens_since_fired)
    assert a.step == b.step and a.tokens_seen == b.tokens_seen


@pytest.mark.parametrize("architecture", list(ARCH_KW))
def test_interrupted_and_resumed_run_is_bitwise_identical(tmp_path, architecture):
    cfg = small_config(architecture)
    full = Trainer(cfg, tmp_path / "full")
    full_metrics = full.train(data())

    part = Trainer(cfg, tmp_path / "part", should_stop=lambda: part.step >= 19)
    assert part.train(data())["stopped"] is True
    assert latest_checkpoint(tmp_path / "part").name == "step_000000016"
    resumed = Trainer.resume(tmp_path / "part")
    assert resumed.step == 16
    resumed_metrics = resumed.train(data())  # a fresh iterator: its position is restored from the checkpoint
    assert_same_training_state(full, resumed)
    assert resumed_metrics["stopped"] is False and resumed_metrics["step"] == full_metrics["step"] == 24


def test_resume_fast_forwards_a_plain_iterator(tmp_path):
    cfg = small_config("topk")
    full = Trainer(cfg, tmp_path / "full")
    full.train(plain_batches())
    part = Trainer(cfg, tmp_path / "part", should_stop=lambda: part.step >= 10)
    part.train(plain_batches())
    resumed = Trainer.resume(tmp_path / "part")
    resumed.train(plain_batches())
    assert_same_training_state(full, resumed)


def test_a_trainer_stopped_in_memory_continues_with_the_same_iterator(tmp_path):
    cfg = small_config("batchtopk")
    full = Trainer(cfg)
    full.train(data())
    stop = {"at": 9}
    part = Trainer(cfg, should_stop=lambda: part.step >= stop["at"])
    stream = data()
    assert part.train(stream)["stopped"] is True
    stop["at"] = 10**9
    part.train(stream)
    assert_same_training_state(full, part)


def test_should_stop_ends_the_run_without_writing_more(tmp_path):
    cfg = small_config(checkpoint_every=2)
    written = []
    trainer = Trainer(cfg, tmp_path, should_stop=lambda: trainer.step >= 4, on_checkpoint=lambda p, s: written.append(s))
    metrics = trainer.train(data())
    # Step 4 was computed and its checkpoint was due, but stop had been requested: not written.
    assert metrics["stopped"] is True and trainer.step == 4
    assert written == [2]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000000002"]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_a_stop_after_the_last_step_still_writes_nothing(tmp_path):
    trainer = Trainer(small_config(steps=10, checkpoint_every=4), tmp_path, should_stop=lambda: trainer.step >= 10)
    assert trainer.train(data())["stopped"] is True
    assert latest_checkpoint(tmp_path).name == "step_000000008"


def test_before_commit_fences_checkpoints(tmp_path):
    seen = []

    def fence(step):
        seen.append(step)
        return step < 16

    trainer = Trainer(small_config(), tmp_path, before_commit=fence)
    with pytest.raises(CommitRefused):
        trainer.train(data())
    assert seen == [8, 16]
    assert latest_checkpoint(tmp_path).name == "step_000000008"
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_keeps_the_last_n_checkpoints_and_a_final_one(tmp_path):
    trainer = Trainer(small_config(steps=21, checkpoint_every=4, keep_checkpoints=2), tmp_path)
    trainer.train(data())
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000000020", "step_000000021"]
    state = json.loads((latest_checkpoint(tmp_path) / "trainer_state.json").read_text())
    assert state["finished"] is True and state["step"] == 21


def test_crash_mid_write_leaves_the_previous_checkpoint_latest(tmp_path, monkeypatch):
    trainer = Trainer(small_config(), tmp_path)
    calls = {"n": 0}
    real_save = ckpt.save_file

    def flaky_save(tensors, path):
        calls["n"] += 1
        if calls["n"] == 4:  # second checkpoint (two safetensors files each), second file
            raise OSError("disk full")
        real_save(tensors, path)

    monkeypatch.setattr(ckpt, "save_file", flaky_save)
    with pytest.raises(OSError):
        trainer.train(data())
    assert latest_checkpoint(tmp_path).name == "step_000000008"
    # A SIGKILL mid-write leaves a temp folder behind (named after its dead writer): ignored, then
    # cleaned by the next write.
    killed = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.wait()
    stale = tmp_path / "checkpoints" / f".tmp-step_000000016-{killed.pid}-0123abcd"
    stale.mkdir()
    (stale / "sae.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path).name == "step_000000008"
    monkeypatch.setattr(ckpt, "save_file", real_save)
    resumed = Trainer.resume(tmp_path)
    resumed.train(data())
    assert not stale.exists()
    assert latest_checkpoint(tmp_path).name == "step_000000024"


def test_progress_metrics_match_a_brute_force_computation():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 16, generator=gen) * 3 + 1  # not zero-mean, not unit-scale
    cfg = small_config("relu", d_sae=48, batch_size=64, steps=1, log_every=1, dead_window_tokens=64,
                       lr_warmup_steps=0, lr_decay_steps=0, sparsity_warmup_steps=0)
    reports = []
    trainer = Trainer(cfg, on_progress=reports.append)
    trainer.start(x)
    before = copy.deepcopy(trainer.sae)
    trainer.train(iter([x]))
    (m,) = reports

    xs = x * trainer.scale
    with torch.no_grad():
        acts = before.encode(xs)
        recon = before.decode(acts)
    sse = ((xs - recon) ** 2).sum()
    sst = ((xs - xs.mean(dim=0)) ** 2).sum()
    fired = (acts > 0).float()
    assert m["normalized_mse"] == pytest.approx(float(sse / sst), rel=1e-5)
    assert m["explained_variance"] == pytest.approx(1 - float(sse / sst), rel=1e-5)
    assert m["mse"] == pytest.approx(float(((x - recon / trainer.scale) ** 2).mean()), rel=1e-5)
    assert m["l0"] == pytest.approx(float(fired.sum(dim=1).mean()), rel=1e-6)
    assert m["dead_fraction"] == pytest.approx(float((fired.sum(0) == 0).float().mean()))
    assert m["dense_fraction"] == pytest.approx(float((fired.mean(0) > DENSE_FIRING_FRACTION).float().mean()))
    l1 = float(acts.sum(dim=1).mean())
    assert m["loss"] == pytest.approx(float(sse) / 64 + cfg.l1_coefficient * l1, rel=1e-5)
    assert m["lr"] == cfg.lr and m["step"] == 1 and m["total_steps"] == 1 and m["tokens_seen"] == 64
    assert m["tokens_per_s"] > 0


def test_dead_latents_need_a_full_window_and_feed_auxk():
    cfg = small_config("topk", steps=6, log_every=1, dead_window_tokens=32 * 3, lr_warmup_steps=0, lr_decay_steps=0)
    reports = []
    trainer = Trainer(cfg, on_progress=reports.append)
    trainer.train(data())
    # 48 features, 96 latents, k=4: some latents cannot fire; they only count as dead after 3 batches.
    assert reports[0]["dead_fraction"] == 0.0 and reports[1]["dead_fraction"] == 0.0
    assert reports[3]["dead_fraction"] > 0
    assert "aux_loss" not in reports[1] and "aux_loss" in reports[3]


@pytest.mark.parametrize("architecture", list(ARCH_KW))
def test_a_fresh_encoder_is_the_decoder_transposed_at_the_configs_scale(architecture):
    trainer = Trainer(small_config(architecture, encoder_init_scale=0.25))
    trainer.start(data().sample(0))
    sae = trainer.sae
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(sae.d_sae))
    assert torch.equal(sae.W_enc, sae.W_dec.t() * 0.25)
    default = Trainer(small_config(architecture))
    default.start(data().sample(0))
    assert torch.equal(default.sae.W_enc, default.sae.W_dec.t() * default.config.encoder_init_scale)


def test_lr_and_sparsity_schedules():
    from mistudio.sae.schedules import lr_at, sparsity_coefficient_at

    lrs = [lr_at(s, lr=1.0, total_steps=10, warmup_steps=2, decay_steps=4) for s in range(10)]
    assert lrs == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25]
    assert [sparsity_coefficient_at(s, coefficient=2.0, warmup_steps=4) for s in range(5)] == [0.5, 1.0, 1.5, 2.0, 2.0]


def test_exhausted_data_finishes_early_and_says_so(tmp_path):
    batches = [data().sample(i) for i in range(5)]
    metrics = Trainer(small_config(), tmp_path).train(iter(batches))
    assert metrics["stopped"] is False and metrics["data_exhausted"] is True and metrics["step"] == 5
    assert latest_checkpoint(tmp_path).name == "step_000000005"
