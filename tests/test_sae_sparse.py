"""The sparse TopK/BatchTopK kernels give the same forward and gradients as dense autograd."""

from __future__ import annotations

import pytest
import torch

from mistudio.sae import BatchTopKSAE, TopKSAE
from mistudio.sae.sparse import SparseCodes, gather_linear, sparse_decode


def _pair(cls, **kw):
    models = [cls(24, 96, k=5, aux_k=12, dtype=torch.float64, generator=torch.Generator().manual_seed(3),
                  sparse_kernels=sparse, **kw) for sparse in (True, False)]
    gen = torch.Generator().manual_seed(4)
    b_dec, b_enc = torch.randn(24, generator=gen, dtype=torch.float64), torch.randn(96, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        for m in models:  # non-zero biases so every gradient path is exercised
            m.b_dec.copy_(b_dec)
            m.b_enc.copy_(0.3 * b_enc)
    return models


@pytest.mark.parametrize("cls", [TopKSAE, BatchTopKSAE])
@pytest.mark.parametrize("with_dead", [False, True])
def test_sparse_gradients_equal_dense_autograd(cls, with_dead):
    sparse, dense = _pair(cls)
    x = torch.randn(40, 24, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    dead = (torch.arange(96) % 3 == 0) if with_dead else None
    outs = [m.training_forward(x, dead_mask=dead) for m in (sparse, dense)]
    assert ("aux_loss" in outs[0].terms) == with_dead
    torch.testing.assert_close(outs[0].recon, outs[1].recon)
    torch.testing.assert_close(outs[0].loss, outs[1].loss)
    assert torch.equal(outs[0].fired, outs[1].fired)
    for out in outs:
        out.loss.backward()
    for name, p in sparse.named_parameters():
        q = dict(dense.named_parameters())[name]
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert torch.allclose(p.grad, q.grad, rtol=1e-9, atol=1e-12), name


def test_kernels_against_dense_ops_with_uneven_rows():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    W = torch.randn(8, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(10, generator=gen, dtype=torch.float64, requires_grad=True)
    W_dec = torch.randn(10, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(6, 10, generator=gen) < 0.3
    mask[2] = False  # a row with no active latent
    rows, cols = mask.nonzero(as_tuple=True)
    codes = SparseCodes.from_pairs(rows, cols, 6, 10)
    pre = (x @ W + b).detach()
    out = sparse_decode(gather_linear(x, W, b, pre, codes), W_dec, codes)
    target = torch.randn(6, 8, generator=gen, dtype=torch.float64)
    (out * target).sum().backward()
    grads = [t.grad.clone() for t in (x, W, b, W_dec)]
    for t in (x, W, b, W_dec):
        t.grad = None
    dense = ((x @ W + b) * mask) @ W_dec
    (dense * target).sum().backward()
    torch.testing.assert_close(out, dense)
    for got, t in zip(grads, (x, W, b, W_dec)):
        torch.testing.assert_close(got, t.grad)


def test_float32_sparse_matches_dense_closely():
    models = [TopKSAE(64, 512, k=16, generator=torch.Generator().manual_seed(1), sparse_kernels=s) for s in (True, False)]
    x = torch.randn(256, 64, generator=torch.Generator().manual_seed(2))
    for m in models:
        m.training_forward(x).loss.backward()
    for name, p in models[0].named_parameters():
        q = dict(models[1].named_parameters())[name]
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-5), name
