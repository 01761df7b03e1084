"""Sparse encoder/decoder kernels for TopK-style SAEs (CPU and CUDA, plain PyTorch).

A TopK SAE keeps k of d_sae latents per token, yet a dense implementation pays for all
d_sae in three of its four big matmuls (decoder forward, decoder grads, encoder grad).
Here only the encoder forward stays dense (every pre-activation is needed to pick the
top k); everything else touches the selected (row, latent) pairs only, with
embedding-bag gathers (fused multiply-add over gathered rows, no [pairs, d_in] temporary).

Active codes are a flat list of (row, col) pairs sorted by row, so per-token TopK
(k per row) and BatchTopK (a varying number per row) share one code path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class SparseCodes:
    """Which latents are active: pair p is (rows[p], cols[p]); pairs are sorted by row."""

    rows: torch.Tensor  # [P] int64
    cols: torch.Tensor  # [P] int64
    row_offsets: torch.Tensor  # [n_rows] int64: start of each row's pairs
    n_rows: int
    n_cols: int
    k: int | None = None  # pairs per row when every row has the same number (TopK)
    _by_col: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_topk(cls, indices: torch.Tensor, n_cols: int) -> "SparseCodes":
        """From per-row indices [n_rows, k] (TopK)."""
        n_rows, k = indices.shape
        device = indices.device
        rows = torch.arange(n_rows, device=device).repeat_interleave(k)
        offsets = torch.arange(0, n_rows * k, k, device=device)
        return cls(rows, indices.reshape(-1), offsets, n_rows, n_cols, k)

    @classmethod
    def from_pairs(cls, rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int) -> "SparseCodes":
        """From row-sorted pairs (e.g. `mask.nonzero()`), any number per row."""
        counts = torch.bincount(rows, minlength=n_rows)
        offsets = torch.zeros(n_rows, dtype=torch.long, device=rows.device)
        offsets[1:] = counts.cumsum(0)[:-1]
        return cls(rows, cols, offsets, n_rows, n_cols)

    def by_col(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(order, col_offsets): a permutation sorting pairs by latent, and each latent's start.

        Used to turn weight-gradient scatters into gathers; computed once, shared by the
        encoder and decoder backward passes.
        """
        if self._by_col is None:
            order = torch.argsort(self.cols, stable=True)
            counts = torch.bincount(self.cols, minlength=self.n_cols)
            col_offsets = torch.zeros(self.n_cols, dtype=torch.long, device=self.cols.device)
            col_offsets[1:] = counts.cumsum(0)[:-1]
            self._by_col = (order, col_offsets)
        return self._by_col

    def gather(self, dense: torch.Tensor) -> torch.Tensor:
        """dense[rows[p], cols[p]] for every pair (differentiable)."""
        if self.k is not None:  # row-wise gather: faster than flat advanced indexing
            return dense.gather(1, self.cols.view(self.n_rows, self.k)).reshape(-1)
        return dense[self.rows, self.cols]

    def to_dense(self, values: torch.Tensor) -> torch.Tensor:
        """[n_rows, n_cols] with the pairs' values and zeros elsewhere (differentiable)."""
        out = values.new_zeros(self.n_rows, self.n_cols)
        if self.k is not None:
            return out.scatter(1, self.cols.view(self.n_rows, self.k), values.view(self.n_rows, self.k))
        return out.index_put((self.rows, self.cols), values)


def _bag_sum(table: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """out[b] = sum over the b-th bag of weights[p] * table[index[p]]."""
    return F.embedding_bag(index, table, offsets, mode="sum", per_sample_weights=weights.to(table.dtype))


def _pair_dots(grad: torch.Tensor, table: torch.Tensor, codes: SparseCodes) -> torch.Tensor:
    """dots[p] = <grad[rows[p]], table[cols[p]]>, without building [P, d] temporaries."""
    op = getattr(torch.ops.aten, "_embedding_bag_per_sample_weights_backward", None)
    if op is not None:
        return op(grad.contiguous(), table, codes.cols, codes.row_offsets, codes.rows, 0, -1)
    out = grad.new_empty(codes.rows.shape[0])  # fallback: chunked, bounded memory
    for start in range(0, out.shape[0], 8192):
        sl = slice(start, start + 8192)
        out[sl] = (grad[codes.rows[sl]] * table[codes.cols[sl]]).sum(-1)
    return out


def _weight_grad(codes: SparseCodes, coeffs: torch.Tensor, row_vectors: torch.Tensor) -> torch.Tensor:
    """G[j] = sum over pairs p with cols[p] == j of coeffs[p] * row_vectors[rows[p]]  -> [n_cols, d]."""
    order, col_offsets = codes.by_col()
    return _bag_sum(row_vectors, codes.rows[order], col_offsets, coeffs[order])


class _GatherLinear(torch.autograd.Function):
    """values[p] = (x @ W + b)[rows[p], cols[p]], from pre-activations already computed.

    Backward is exact and sparse: only the selected pairs carry gradient.
    """

    @staticmethod
    def forward(ctx, x, W, b, pre, codes):  # noqa: D401
        ctx.codes = codes
        ctx.save_for_backward(x, W)
        ctx.b_dtype = b.dtype
        return pre[codes.rows, codes.cols]

    @staticmethod
    def backward(ctx, grad_values):
        x, W = ctx.saved_tensors
        codes: SparseCodes = ctx.codes
        g = grad_values.to(W.dtype)
        grad_x = grad_W = grad_b = None
        if ctx.needs_input_grad[0]:
            # d/dx of sum_p g_p <x[row_p], W[:, col_p]>: bag-sum of encoder columns per row.
            grad_x = _bag_sum(W.t().contiguous(), codes.cols, codes.row_offsets, g).to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_W = _weight_grad(codes, g, x.to(W.dtype)).t()
        if ctx.needs_input_grad[2]:
            grad_b = torch.zeros(codes.n_cols, dtype=ctx.b_dtype, device=g.device)
            grad_b.index_add_(0, codes.cols, g.to(ctx.b_dtype))
        return grad_x, grad_W, grad_b, None, None


class _SparseDecode(torch.autograd.Function):
    """out[b] = sum over active pairs of row b of values[p] * W_dec[cols[p]]  (no bias)."""

    @staticmethod
    def forward(ctx, values, W_dec, codes):  # noqa: D401
        ctx.codes = codes
        ctx.save_for_backward(values, W_dec)
        return _bag_sum(W_dec, codes.cols, codes.row_offsets, values)

    @staticmethod
    def backward(ctx, grad_out):
        values, W_dec = ctx.saved_tensors
        codes: SparseCodes = ctx.codes
        grad_out = grad_out.to(W_dec.dtype).contiguous()
        grad_values = grad_W = None
        if ctx.needs_input_grad[0]:
            grad_values = _pair_dots(grad_out, W_dec, codes).to(values.dtype)
        if ctx.needs_input_grad[1]:
            grad_W = _weight_grad(codes, values.to(W_dec.dtype), grad_out)
        return grad_values, grad_W, None


def gather_linear(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor, pre: torch.Tensor, codes: SparseCodes) -> torch.Tensor:
    """Selected pre-activations [P] with a sparse backward. `pre` must equal x @ W + b (detached)."""
    return _GatherLinear.apply(x, W, b, pre.detach(), codes)


def sparse_decode(values: torch.Tensor, W_dec: torch.Tensor, codes: SparseCodes) -> torch.Tensor:
    """values [P] of the active pairs -> reconstruction [n_rows, d] without the decoder bias."""
    return _SparseDecode.apply(values, W_dec, codes)
