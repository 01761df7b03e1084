"""ReLU SAE with an L1 penalty weighted by decoder-row norm (SAELens "standard")."""

from __future__ import annotations

import torch

from mistudio.sae.base import SparseAutoencoder, TrainOutput, count_active, squared_error


class ReluSAE(SparseAutoencoder):
    architecture = "relu"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pre_activations(x))

    def training_forward(self, x, *, sparsity_coefficient=0.0, dead_mask=None) -> TrainOutput:
        acts = self.encode(x)
        recon = self.decode(acts)
        mse = squared_error(x.to(recon.dtype), recon)
        # Weighting by ||W_dec row|| makes the penalty invariant to trading latent
        # magnitude for decoder norm (rows are kept unit-norm, so it is a safeguard).
        # Summing over the batch first keeps it one pass over [batch, d_sae].
        l1 = (acts.sum(dim=0) * self.W_dec.norm(dim=1)).sum() / acts.shape[0]
        fired = count_active(acts)
        return TrainOutput(
            recon=recon,
            loss=mse + sparsity_coefficient * l1,
            terms={"mse_loss": mse.detach(), "l1_loss": l1.detach()},
            fired=fired,
            l0=fired.sum() / acts.shape[0],
        )
