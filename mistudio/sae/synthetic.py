"""Ground-truth sparse data (Sharkey et al. 2022, "Taking features out of superposition").

n_features random unit directions in d dims; each sample switches features on
independently with exponentially decaying probabilities (scaled so about `avg_active`
are on), gives them uniform [0, 1) magnitudes and sums the directions. An SAE that
recovers the features has decoder rows matching the directions: `mmcs` measures it.
"""

from __future__ import annotations

import torch


class SyntheticFeatures:
    """Infinite, deterministic iterator of [batch_size, d] float32 batches.

    Batch i is drawn from its own generator seeded by (seed, i), so `load_state_dict`
    jumps to any position at no cost (the trainer's exact resume relies on this).
    """

    def __init__(
        self,
        n_features: int = 512,
        d: int = 256,
        avg_active: float = 5.0,
        frequency_decay: float = 2.0,
        batch_size: int = 1024,
        seed: int = 0,
    ):
        gen = torch.Generator().manual_seed(seed)
        dirs = torch.randn(n_features, d, generator=gen)
        self.directions = dirs / dirs.norm(dim=1, keepdim=True)
        # p_i ~ exp(-frequency_decay * i / n): the rarest feature is e^decay times rarer than the commonest.
        weights = torch.exp(-frequency_decay * torch.arange(n_features) / n_features)
        self.probabilities = (weights * avg_active / weights.sum()).clamp(max=1.0)
        self.batch_size, self.seed, self.batch_index = batch_size, seed, 0

    def sample(self, batch_index: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + batch_index + 1)
        n = self.directions.shape[0]
        on = torch.rand(self.batch_size, n, generator=gen) < self.probabilities
        magnitudes = torch.rand(self.batch_size, n, generator=gen)
        return (on * magnitudes) @ self.directions

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        batch = self.sample(self.batch_index)
        self.batch_index += 1
        return batch

    def state_dict(self) -> dict:
        return {"batch_index": self.batch_index}

    def load_state_dict(self, state: dict) -> None:
        self.batch_index = int(state["batch_index"])


def mmcs(true_dirs: torch.Tensor, W_dec: torch.Tensor) -> float:
    """Mean over true features of the max cosine similarity with any decoder row."""
    t = true_dirs.float() / true_dirs.float().norm(dim=1, keepdim=True)
    w = W_dec.detach().float()
    w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return float((t @ w.t()).max(dim=1).values.mean())


def describe(data: SyntheticFeatures) -> str:
    p = data.probabilities
    return (
        f"{p.numel()} features in {data.directions.shape[1]} dims, {float(p.sum()):.2f} active on average, "
        f"frequencies {float(p.max()):.4f} down to {float(p.min()):.4f}"
    )
