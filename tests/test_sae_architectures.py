"""Each architecture recovers the Sharkey et al. ground-truth features; shared invariants."""

from __future__ import annotations

import time

import pytest
import torch

from mistudio.sae import SyntheticFeatures, Trainer, TrainingConfig, mmcs
from mistudio.sae.batchtopk import batch_topk_pairs
from mistudio.sae.trainer import build_sae

# Tuned for 512 features in 256 dims: 2x overcomplete, small batches, many steps. Each reaches
# MMCS >= 0.994 in 3-8 s on an idle 2-core CPU (benchmarks/bench_synthetic.py runs them longer).
RECOVERY = {
    "topk": dict(k=8, steps=300),
    "batchtopk": dict(k=6, steps=300),
    "relu": dict(l1_coefficient=3.0, steps=650),
    "jumprelu": dict(l0_coefficient=2.0, jumprelu_init_threshold=1.0, jumprelu_bandwidth=0.5, steps=600),
}


def synthetic_config(architecture: str, **kw) -> TrainingConfig:
    # The schedule these were tuned with (5% warmup, decay over the last 20%), pinned: the default
    # schedule is chosen for real activations (README "The training recipe").
    steps = kw.get("steps", 1)
    base = dict(
        hook_point="blocks.0.hook_resid_post", architecture=architecture, d_sae=1024, batch_size=256,
        lr=5e-3, lr_warmup_steps=steps // 20, lr_decay_steps=int(0.2 * steps), log_every=100,
        checkpoint_every=10_000, device="cpu", seed=0,
    )
    return TrainingConfig(**{**base, **kw})


@pytest.mark.parametrize("architecture", list(RECOVERY))
def test_recovers_ground_truth_features(architecture):
    data = SyntheticFeatures(batch_size=256, seed=0)
    trainer = Trainer(synthetic_config(architecture, **RECOVERY[architecture]))
    start = time.perf_counter()
    metrics = trainer.train(data)
    score = mmcs(data.directions, trainer.sae.W_dec)
    print(f"{architecture}: MMCS {score:.4f}, EV {metrics['explained_variance']:.3f}, "
          f"L0 {metrics['l0']:.2f}, {time.perf_counter() - start:.1f}s")
    assert score >= 0.95
    assert metrics["explained_variance"] > 0.9
    assert 3 <= metrics["l0"] <= 12  # ~5 true features active per sample


@pytest.mark.parametrize("architecture", list(RECOVERY))
def test_decoder_rows_stay_unit_norm(architecture):
    kw = {k: v for k, v in RECOVERY[architecture].items() if k != "steps"}
    trainer = Trainer(synthetic_config(architecture, steps=5, d_sae=64, **{**kw, "k": 4} if "k" in kw else kw))
    trainer.train(SyntheticFeatures(n_features=64, d=32, batch_size=64))
    norms = trainer.sae.W_dec.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


def test_gradient_projection_removes_parallel_component():
    cfg = synthetic_config("relu", steps=1, d_in=8, d_sae=16)
    sae = build_sae(cfg)
    sae.W_dec.grad = torch.randn_like(sae.W_dec)
    sae.remove_parallel_decoder_grad()
    parallel = (sae.W_dec.grad * sae.W_dec).sum(dim=1)
    assert parallel.abs().max() < 1e-5


def test_b_dec_starts_at_geometric_median_of_first_batch():
    data = SyntheticFeatures(n_features=64, d=32, batch_size=128)
    cfg = synthetic_config("topk", k=4, steps=1, d_sae=64, normalize_activations=False, lr=1e-12)
    trainer = Trainer(cfg)
    first = data.sample(0)
    trainer.start(first)
    b = trainer.sae.b_dec.detach()
    total = lambda c: (first - c).norm(dim=1).sum()  # noqa: E731
    assert total(b) <= total(first.mean(0)) + 1e-4  # the median beats the mean on L1 distance
    for _ in range(5):
        assert total(b) <= total(b + 0.01 * torch.randn_like(b)) + 1e-4


def test_batch_topk_pairs_match_a_flat_top_k():
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):  # heavy-tailed row scales: some rows hold far more than k of the batch's top
        rows_n, cols_n = int(torch.randint(2, 40, (1,), generator=gen)), int(torch.randint(8, 300, (1,), generator=gen))
        k = int(torch.randint(1, max(2, cols_n // 4), (1,), generator=gen))
        pre = torch.randn(rows_n, cols_n, generator=gen) * torch.rand(rows_n, 1, generator=gen) ** 4 * 10
        rows, cols = batch_topk_pairs(pre, k)
        flat = pre.relu().flatten()
        expected = {i for i in flat.topk(min(k * rows_n, flat.numel())).indices.tolist() if flat[i] > 0}
        assert set((rows * cols_n + cols).tolist()) == expected
        assert torch.all(rows[1:] >= rows[:-1])  # row-sorted


def test_inference_encode_matches_training_selection_for_topk():
    cfg = synthetic_config("topk", k=4, steps=1, d_in=16, d_sae=32)
    sae = build_sae(cfg)
    x = torch.randn(10, 16)
    out = sae.training_forward(x)
    assert torch.allclose(out.recon, sae(x), atol=1e-5)
    assert int((sae.encode(x) != 0).sum(dim=1).max()) <= 4
