"""SAELens itself loads our exports and computes the same encode/decode.

Runs only where `sae_lens` is importable (`pip install -e .[saelens]`, ~1 GB); skipped otherwise.
"""

from __future__ import annotations

import pytest
import torch

sae_lens = pytest.importorskip("sae_lens")

from mistudio.sae import SyntheticFeatures, TrainingConfig, load_sae, train_and_export  # noqa: E402

ARCH_KW = {"topk": dict(k=5), "batchtopk": dict(k=5), "relu": dict(l1_coefficient=2.0), "jumprelu": dict(l0_coefficient=1.0)}


@pytest.mark.parametrize("architecture", list(ARCH_KW))
def test_saelens_loads_our_export(tmp_path, architecture):
    cfg = TrainingConfig(
        hook_point="blocks.2.hook_resid_post", model="tiny-test-model", architecture=architecture, d_sae=96,
        batch_size=64, steps=30, lr=3e-3, log_every=10, checkpoint_every=100, device="cpu", **ARCH_KW[architecture],
    )
    data = SyntheticFeatures(n_features=48, d=24, batch_size=64, seed=3)
    train_and_export(cfg, tmp_path, data)
    ours = load_sae(tmp_path / "sae")
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "sae"), device="cpu")
    assert theirs.cfg.d_in == 24 and theirs.cfg.d_sae == 96
    assert theirs.cfg.metadata.hook_name == "blocks.2.hook_resid_post"
    if architecture == "topk":
        assert theirs.cfg.k == 5  # without `k` in cfg.json SAELens silently uses 100
    x = data.sample(1000) * 3.0 - 0.2  # raw units, off-centre
    with torch.no_grad():
        acts = ours.encode(x)
        assert (acts != 0).any()
        torch.testing.assert_close(theirs.encode(x), acts, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(theirs.decode(acts), ours.decode(acts), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(theirs(x), ours(x), rtol=1e-5, atol=1e-5)
