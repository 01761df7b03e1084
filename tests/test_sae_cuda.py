"""The GPU path: on CUDA the sparse TopK/BatchTopK kernels give dense autograd's gradients, bf16
autocast stays close to them, and a CUDA training reports its peak allocated memory. Skipped
where no CUDA device is present (this project's CI machines have none); runs wherever one is."""

from __future__ import annotations

import pytest
import torch

from mistudio.sae import BatchTopKSAE, TopKSAE, Trainer, TrainingConfig
from mistudio.sae.multi import Member, train_and_export_many

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
D_IN, D_SAE, BATCH, K = 256, 2048, 1024, 32


def _pair(cls):
    """The same SAE twice on the GPU: sparse kernels and the dense reference."""
    models = [cls(D_IN, D_SAE, k=K, aux_k=128, generator=torch.Generator().manual_seed(3), sparse_kernels=sparse)
              for sparse in (True, False)]
    gen = torch.Generator().manual_seed(4)
    b_enc = 0.1 * torch.randn(D_SAE, generator=gen)
    for m in models:
        with torch.no_grad():
            m.b_enc.copy_(b_enc)  # non-zero biases so every gradient path is exercised
    return [m.cuda() for m in models]


def _grads(model, x, dead, autocast: bool) -> dict:
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        out = model.training_forward(x, dead_mask=dead)
    out.loss.backward()
    grads = {name: p.grad.detach().float().clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return grads


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.mark.parametrize("cls", [TopKSAE, BatchTopKSAE])
@pytest.mark.parametrize("with_dead", [False, True])
def test_cuda_sparse_kernels_and_bf16_autocast_agree_with_dense_gradients(cls, with_dead):
    sparse, dense = _pair(cls)
    x = torch.randn(BATCH, D_IN, generator=torch.Generator().manual_seed(5)).cuda()
    dead = ((torch.arange(D_SAE) % 3) == 0).cuda() if with_dead else None
    reference = _grads(dense, x, dead, autocast=False)
    fp32 = _grads(sparse, x, dead, autocast=False)
    bf16 = _grads(sparse, x, dead, autocast=True)
    for name, g in reference.items():
        assert g.abs().sum() > 0, name
        assert _relative_error(fp32[name], g) < 1e-4, name  # the same maths, in another order (TF32 off)
        assert _relative_error(bf16[name], g) < 3e-2, name  # bf16's 8-bit mantissa, accumulated in fp32


def test_a_cuda_training_reports_its_peak_allocated_memory(tmp_path):
    cfg = TrainingConfig(hook_point="blocks.0.hook_resid_post", d_in=D_IN, d_sae=D_SAE, k=K, batch_size=BATCH,
                         steps=8, log_every=4, checkpoint_every=4, device="cuda")
    x = torch.randn(BATCH, D_IN, generator=torch.Generator().manual_seed(0))
    metrics = Trainer(cfg, tmp_path / "one").train([x] * 8)
    assert metrics["peak_cuda_allocated_mb"] > D_IN * D_SAE * 4 * 2 / 2**20  # at least both weight matrices
    many = train_and_export_many([Member(cfg, tmp_path / "a"), Member(cfg.model_copy(update={"seed": 1}), tmp_path / "b")],
                                 {cfg.hook_point: iter([x] * 8)})
    assert [m["step"] for m in many] == [8, 8] and all(m["peak_cuda_allocated_mb"] > 0 for m in many)
