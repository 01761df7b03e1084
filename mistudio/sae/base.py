"""What every SAE architecture shares: parameters, decode, the unit-norm decoder, b_dec init.

Layout follows SAELens so exports need no renaming: W_enc [d_in, d_sae], b_enc [d_sae],
W_dec [d_sae, d_in], b_dec [d_in]; the encoder sees x - b_dec (`apply_b_dec_to_input`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn


@dataclass
class TrainOutput:
    """What one training forward pass hands the trainer."""

    recon: torch.Tensor  # [B, d_in] reconstruction
    loss: torch.Tensor  # scalar to backpropagate
    terms: dict[str, torch.Tensor]  # named loss terms (detached scalars) for logging
    fired: torch.Tensor  # [d_sae] int64: tokens of this batch on which each latent was non-zero
    l0: torch.Tensor  # scalar: mean number of non-zero latents per token
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # architecture metrics (e.g. threshold)


class SparseAutoencoder(nn.Module):
    """Base class. Subclasses define `encode` and `training_forward`."""

    architecture: ClassVar[str]  # its name in mistudio.sae.registry (where its other torch-free facts are)
    uses_dead_mask: ClassVar[bool] = False  # training_forward wants the trainer's dead-latent mask (AuxK)

    def __init__(self, d_in: int, d_sae: int, *, dtype: torch.dtype = torch.float32, device=None, generator=None):
        super().__init__()
        self.d_in, self.d_sae = d_in, d_sae
        W_dec = torch.randn(d_sae, d_in, dtype=dtype, device="cpu", generator=generator)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec.to(device))
        # Tied init (encoder = decoder transpose): latents start aligned with their
        # decoder direction, which cuts the early dead-latent count (OpenAI TopK paper).
        self.W_enc = nn.Parameter(W_dec.t().contiguous().to(device))
        self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=dtype, device=device))
        self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=dtype, device=device))

    # --- inference -----------------------------------------------------------------
    def encoder_bias(self) -> torch.Tensor:
        """b_enc - b_dec @ W_enc, so that (x - b_dec) @ W_enc + b_enc == x @ W_enc + encoder_bias().

        Same function, cheaper gradient: b_dec's gradient through the encoder becomes a
        matrix-vector product instead of a [batch, d_sae] x [d_sae, d_in] matmul.
        """
        return torch.addmv(self.b_enc, self.W_enc.t(), self.b_dec, alpha=-1)

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.W_enc.dtype)
        flat = torch.addmm(self.encoder_bias(), x.reshape(-1, self.d_in), self.W_enc)
        return flat.reshape(*x.shape[:-1], self.d_sae)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense latent activations [..., d_sae]."""
        raise NotImplementedError

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        return acts.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of x."""
        return self.decode(self.encode(x))

    # --- training ------------------------------------------------------------------
    def training_forward(
        self, x: torch.Tensor, *, sparsity_coefficient: float = 0.0, dead_mask: torch.Tensor | None = None
    ) -> TrainOutput:
        raise NotImplementedError

    def hparams(self) -> dict:
        """Architecture hyperparameters needed to rebuild the module (go into cfg.json)."""
        return {}

    # --- SAELens export / import (mistudio.sae.export writes and reads the files) ------
    def saelens_cfg(self) -> dict:
        """Architecture fields of the exported cfg.json beyond d_in, d_sae and dtype."""
        return {}

    def saelens_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors of sae_weights.safetensors, by SAELens' names."""
        state = self.state_dict()
        return {name: state[name] for name in ("W_enc", "b_enc", "W_dec", "b_dec")}

    @classmethod
    def hparams_from_saelens(cls, cfg: dict) -> dict:
        """Constructor arguments an export's cfg.json holds (for exports without our metadata)."""
        return {}

    def load_saelens_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(weights)

    @torch.no_grad()
    def after_step(self) -> None:
        """Called after each optimizer step: keep decoder rows unit-norm (and subclass clamps)."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Drop the gradient component along each (unit) decoder row before the step.

        Movement along the row would only change its norm, which `after_step` undoes; left
        in, Adam's per-coordinate scaling turns it into spurious rotation.
        """
        g = self.W_dec.grad
        if g is not None:
            g -= (g * self.W_dec).sum(dim=1, keepdim=True) * self.W_dec

    @torch.no_grad()
    def init_b_dec(self, x: torch.Tensor, iterations: int = 50) -> None:
        """Geometric median of a batch (robust to outlier tokens), by Weiszfeld iterations."""
        self.b_dec.copy_(geometric_median(x.to(self.b_dec.dtype), iterations))

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        """Make a model trained on x * scale work on raw x (latents come out divided by scale).

        pre(x * s) / s = (x - b_dec / s) @ W_enc + b_enc / s: the weights stay as they are
        (decoder rows stay unit-norm), biases and thresholds are divided by s.
        """
        self.b_enc /= scale
        self.b_dec /= scale


def geometric_median(points: torch.Tensor, iterations: int = 50, eps: float = 1e-6) -> torch.Tensor:
    median = points.mean(dim=0)
    for _ in range(iterations):
        dist = (points - median).norm(dim=1).clamp_min(eps)
        weights = 1.0 / dist
        new = (weights[:, None] * points).sum(dim=0) / weights.sum()
        if (new - median).norm() <= eps * (1.0 + median.norm()):
            median = new
            break
        median = new
    return median


def count_active(acts: torch.Tensor) -> torch.Tensor:
    """Tokens on which each latent is non-zero, for non-negative acts [B, d_sae] -> int64 [d_sae].

    sign().sum() in float: 5x faster on CPU than summing a bool mask, exact below 2**24 rows.
    """
    return torch.sign(acts.detach()).sum(dim=0, dtype=torch.float32 if acts.shape[0] < 2**24 else torch.float64).long()


def squared_error(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Per-token squared error summed over d_in, averaged over the batch (SAELens' convention)."""
    return (recon - x).pow(2).sum(dim=-1).mean()
