"""JumpReLU SAE (Rajamanoharan et al. 2024) trained with an L0 penalty via straight-through estimators.

z_j = pre_j * H(pre_j - theta_j). The step H has zero gradient almost everywhere, so the
threshold theta gets a pseudo-gradient from a rectangle kernel of width `bandwidth`
around it, for both the reconstruction (through the jump) and the L0 penalty
sum_j H(pre_j - theta_j). As in the paper, pre-activations get no gradient from the L0
term. theta is a direct parameter clamped at >= 0 (SAELens v6 does this too: Adam moves
a log-parameter multiplicatively and barely shifts a small initial threshold).
"""

from __future__ import annotations

import torch
from torch import nn

from mistudio.sae.base import SparseAutoencoder, TrainOutput, squared_error


class _JumpReLU(torch.autograd.Function):
    """(acts, fired): acts = pre * H(pre - theta); fired[j] = tokens where latent j is on.

    One function for both so the [batch, d_sae] kernel window is built once in backward.
    L0 per token = fired.sum() / batch, and its STE gradient reaches theta through `fired`.
    """

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        shifted = pre - threshold
        # 1.0 where pre > threshold: float ops run ~2x faster than bool masks on CPU.
        on = torch.sign(torch.relu(shifted))
        ctx.save_for_backward(shifted, threshold, on)
        ctx.bandwidth = bandwidth
        return pre * on, on.sum(dim=0, dtype=torch.float32)

    @staticmethod
    def backward(ctx, grad_acts, grad_fired):
        shifted, threshold, on = ctx.saved_tensors
        eps = ctx.bandwidth
        window = (shifted.abs() < eps / 2).to(shifted.dtype)  # rectangle kernel, times eps
        # d acts / d theta = -(theta / eps) K ;  d H / d theta = -(1 / eps) K
        if grad_fired is None:
            weight = grad_acts * threshold
        else:
            weight = torch.addcmul(grad_fired.to(grad_acts.dtype), grad_acts, threshold)
        grad_threshold = -(window * weight).sum(dim=0) / eps
        return grad_acts * on, grad_threshold.to(threshold.dtype), None


class JumpReluSAE(SparseAutoencoder):
    architecture = "jumprelu"

    def __init__(self, d_in: int, d_sae: int, *, bandwidth: float = 0.5, init_threshold: float = 0.5, **kw):
        super().__init__(d_in, d_sae, **kw)
        self.bandwidth = bandwidth
        self.threshold = nn.Parameter(torch.full_like(self.b_enc, init_threshold))

    def hparams(self) -> dict:
        return {"bandwidth": self.bandwidth}

    def saelens_state_dict(self) -> dict[str, torch.Tensor]:
        return {**super().saelens_state_dict(), "threshold": self.threshold}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_activations(x)
        return pre * (pre > self.threshold)

    def training_forward(self, x, *, sparsity_coefficient=0.0, dead_mask=None) -> TrainOutput:
        pre = self.pre_activations(x)
        acts, fired = _JumpReLU.apply(pre, self.threshold.to(pre.dtype), self.bandwidth)
        recon = self.decode(acts)
        mse = squared_error(x.to(recon.dtype), recon)
        l0 = fired.sum() / x.shape[0]
        return TrainOutput(
            recon=recon,
            loss=mse + sparsity_coefficient * l0,
            terms={"mse_loss": mse.detach(), "l0_loss": l0.detach()},
            fired=fired.detach().long(),
            l0=l0.detach(),
        )

    @torch.no_grad()
    def after_step(self) -> None:
        super().after_step()
        self.threshold.clamp_(min=0.0)

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        super().fold_input_scale(scale)
        self.threshold /= scale
