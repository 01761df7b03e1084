"""BatchTopK SAE (Bussmann et al. 2024): k * batch latents kept across the whole batch.

Training keeps the batch's top k*B positive pre-activations, so easy tokens use fewer
latents and hard ones more. Inference cannot see a batch, so, as in the paper, it uses a
single global threshold estimated during training (a running average of the smallest
kept activation per batch): latent j fires when pre_j > threshold. SAELens stores this
as a JumpReLU with that threshold for every latent, and so do our exports.
"""

from __future__ import annotations

import torch

from mistudio.sae.base import TrainOutput
from mistudio.sae.sparse import SparseCodes
from mistudio.sae.topk import TopKSAE


class BatchTopKSAE(TopKSAE):
    architecture = "batchtopk"

    def __init__(self, d_in: int, d_sae: int, *, k: int, threshold_lr: float = 0.01, **kw):
        super().__init__(d_in, d_sae, k=k, **kw)
        self.threshold_lr = threshold_lr
        dtype = self.W_enc.dtype
        # A buffer (not trained by gradient); negative means "not estimated yet".
        self.register_buffer("threshold", torch.full((), -1.0, dtype=dtype, device=self.W_enc.device))

    def hparams(self) -> dict:
        return {**super().hparams(), "threshold_lr": self.threshold_lr}

    # Exported as SAELens' JumpReLU: the global threshold on every latent, no k in cfg.json.
    def saelens_cfg(self) -> dict:
        return {}

    def saelens_state_dict(self) -> dict[str, torch.Tensor]:
        return {**super().saelens_state_dict(), "threshold": torch.full_like(self.b_enc, float(self.threshold.clamp_min(0)))}

    @classmethod
    def hparams_from_saelens(cls, cfg: dict) -> dict:
        return {}  # k and threshold_lr come from our metadata: a SAELens JumpReLU has neither

    def load_saelens_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
        threshold = weights.pop("threshold")
        weights["threshold"] = threshold[0].clone() if threshold.numel() else torch.tensor(0.0)
        self.load_state_dict(weights)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_activations(x)
        return pre * (pre > self.threshold.clamp_min(0))

    def select(self, pre: torch.Tensor) -> SparseCodes:
        rows, cols = batch_topk_pairs(pre, self.k)
        return SparseCodes.from_pairs(rows, cols, pre.shape[0], self.d_sae)

    def training_forward(self, x, *, sparsity_coefficient=0.0, dead_mask=None) -> TrainOutput:
        x = x.to(self.W_enc.dtype)
        codes, values, pre, bias = self.encode_for_training(x)  # only positive values are selected
        recon = self.decode_codes(codes, values) + self.b_dec
        self._update_threshold(values.detach())
        out = self._finish(x, recon, codes, values, pre, bias, dead_mask)
        out.extra["threshold"] = self.threshold.detach().clone()  # a tensor: no device sync per step
        return out

    @torch.no_grad()
    def _update_threshold(self, values: torch.Tensor) -> None:
        if values.numel() == 0 or not self.training:
            return
        smallest = values.min().to(self.threshold.dtype)
        if self.threshold < 0:
            self.threshold.copy_(smallest)
        else:
            self.threshold.lerp_(smallest, self.threshold_lr)

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        super().fold_input_scale(scale)
        if self.threshold >= 0:
            self.threshold /= scale


def batch_topk_pairs(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-sorted (row, col) pairs of the batch's k * rows largest positive pre-activations.

    A flat top-(k*B) over [B, d_sae] is ~10x slower than a per-row top-k on CPU, so take each
    row's top 4k candidates, and find the cut (the (k*B)-th largest value) among them. That
    cut is never above the true one, so a row whose candidates all pass it may hold more:
    such "saturated" rows (e.g. a huge-norm BOS token) join the pool with all their values
    and the cut is taken again. Rows that are not saturated have nothing above the new cut
    outside their candidates, so the result is exact. Ties at the cut are all kept.
    """
    n_rows, n_cols = pre.shape
    total = min(k * n_rows, pre.numel())
    cap = min(n_cols, 4 * k)
    cand_values, cand_cols = pre.topk(cap, dim=-1, sorted=False)
    cut = _kth_largest(cand_values.flatten(), total)
    saturated = cand_values.min(dim=-1).values >= cut
    if cap == n_cols or not bool(saturated.any()):
        keep = (cand_values >= cut) & (cand_values > 0)
        rows, slots = keep.nonzero(as_tuple=True)
        return rows, cand_cols[rows, slots]
    sat_rows = saturated.nonzero().squeeze(1)
    full = pre[sat_rows]
    cut = _kth_largest(torch.cat([cand_values[~saturated].flatten(), full.flatten()]), total)
    keep = (cand_values >= cut) & (cand_values > 0) & ~saturated[:, None]
    rows, slots = keep.nonzero(as_tuple=True)
    sat_i, sat_cols = ((full >= cut) & (full > 0)).nonzero(as_tuple=True)
    rows = torch.cat([rows, sat_rows[sat_i]])
    cols = torch.cat([cand_cols[rows[: slots.numel()], slots], sat_cols])
    order = torch.argsort(rows, stable=True)
    return rows[order], cols[order]


def _kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    return values.topk(k, sorted=False).values.min()
