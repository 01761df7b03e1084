"""Training metrics that do not flatter: pooled variance, token-window dead/dense counts.

- Explained variance is 1 - SSE / SST with SST taken around each batch's mean over all
  tokens and dims (pooled over the log interval), not an average of per-token ratios,
  which rewards reconstructing tokens with large norms.
- A latent is dead when it fired on none of the last `window_tokens` tokens; it cannot be
  called dead before that many tokens have been seen.
- A latent is dense when it fired on more than DENSE_FIRING_FRACTION of the tokens in the
  window (10%: an order of magnitude above a TopK k=32 / 3072 latent's fair share of 1%).
"""

from __future__ import annotations

import torch

DENSE_FIRING_FRACTION = 0.1


class VarianceAccumulator:
    """Sums squared error and total variance over several batches (one log interval)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sse = 0.0  # sum of squared reconstruction errors
        self.sst = 0.0  # sum of squared deviations from the batch mean
        self.l0_sum = 0.0
        self.tokens = 0
        self.values = 0  # tokens * d_in

    @torch.no_grad()
    def add(self, x: torch.Tensor, recon: torch.Tensor, l0: torch.Tensor) -> None:
        x = x.float()
        # Kept as tensors: no device sync per step on CUDA.
        self.sse = self.sse + (recon.float() - x).pow(2).sum(dtype=torch.float64)
        self.sst = self.sst + (x - x.mean(dim=0)).pow(2).sum(dtype=torch.float64)
        self.l0_sum = self.l0_sum + l0.detach().double() * x.shape[0]
        self.tokens += x.shape[0]
        self.values += x.numel()

    def summary(self, scale: float = 1.0) -> dict[str, float]:
        """`scale` is the factor the inputs were multiplied by; mse is reported in the caller's units."""
        if self.tokens == 0:
            return {}
        sse, sst = float(self.sse), float(self.sst)
        fvu = sse / sst if sst > 0 else float("nan")
        return {
            "mse": sse / self.values / scale**2,
            "normalized_mse": fvu,
            "explained_variance": 1.0 - fvu,
            "l0": float(self.l0_sum) / self.tokens,
        }


class HeldOutReconstruction:
    """FVU / explained variance of reconstructions over a whole evaluation set, SST taken around
    that set's mean (one mean for every token, as the peer benchmark judges, not per batch)."""

    def __init__(self):
        self.sse = 0.0
        self.sum_sq = 0.0
        self.sum: torch.Tensor | None = None  # per-dim sum of x, float64
        self.tokens = 0

    @torch.no_grad()
    def add(self, x: torch.Tensor, recon: torch.Tensor) -> None:
        """x, recon: [tokens, d_in], only the tokens that count."""
        x, recon = x.double(), recon.double()
        self.sse += float((recon - x).pow(2).sum())
        self.sum_sq += float(x.pow(2).sum())
        total = x.sum(dim=0)
        self.sum = total if self.sum is None else self.sum + total
        self.tokens += x.shape[0]

    def summary(self) -> dict[str, float]:
        if self.tokens == 0:
            return {}
        sst = self.sum_sq - float(self.sum.pow(2).sum()) / self.tokens
        fvu = self.sse / sst if sst > 0 else float("nan")
        return {"fvu": fvu, "explained_variance": 1.0 - fvu}


class FiringWindow:
    """Per-latent firing counts over the last `window_tokens` tokens.

    Dead detection is exact (tokens since each latent last fired). Firing rates come from
    `n_buckets` buckets of window/n_buckets tokens each, so they cover between
    (n_buckets-1)/n_buckets of the window and the whole window.
    """

    def __init__(self, d_sae: int, window_tokens: int, n_buckets: int = 8, device=None):
        self.window_tokens = int(window_tokens)
        self.n_buckets = n_buckets
        self.bucket_size = max(1, self.window_tokens // n_buckets)
        self.tokens_since_fired = torch.zeros(d_sae, dtype=torch.long, device=device)
        self.counts = torch.zeros(n_buckets, d_sae, dtype=torch.long, device=device)
        self.bucket_tokens = torch.zeros(n_buckets, dtype=torch.long)
        self.bucket = 0
        self.tokens_seen = 0

    @torch.no_grad()
    def update(self, fired: torch.Tensor, n_tokens: int) -> None:
        self.tokens_since_fired += n_tokens
        self.tokens_since_fired[fired > 0] = 0
        if self.bucket_tokens[self.bucket] >= self.bucket_size:
            self.bucket = (self.bucket + 1) % self.n_buckets
            self.counts[self.bucket].zero_()
            self.bucket_tokens[self.bucket] = 0
        self.counts[self.bucket] += fired.to(self.counts.device)
        self.bucket_tokens[self.bucket] += n_tokens
        self.tokens_seen += n_tokens

    def dead_mask(self) -> torch.Tensor:
        return self.tokens_since_fired >= self.window_tokens

    def firing_rate(self) -> torch.Tensor:
        """Fraction of the window's tokens on which each latent fired."""
        total = int(self.bucket_tokens.sum())
        return self.counts.sum(dim=0).double() / max(total, 1)

    def summary(self) -> dict[str, float]:
        return {
            "dead_fraction": float(self.dead_mask().double().mean()),
            "dense_fraction": float((self.firing_rate() > DENSE_FIRING_FRACTION).double().mean()),
        }

    def log_feature_sparsity(self) -> torch.Tensor:
        """log10 firing rate (+1e-10), SAELens' sparsity.safetensors convention."""
        return torch.log10(self.firing_rate().float().cpu() + 1e-10)

    def state_dict(self) -> dict:
        return {
            "tokens_since_fired": self.tokens_since_fired,
            "counts": self.counts,
            "bucket_tokens": self.bucket_tokens,
            "bucket": self.bucket,
            "tokens_seen": self.tokens_seen,
        }

    def load_state_dict(self, state: dict) -> None:
        self.tokens_since_fired.copy_(state["tokens_since_fired"])
        self.counts.copy_(state["counts"])
        self.bucket_tokens.copy_(state["bucket_tokens"])
        self.bucket = int(state["bucket"])
        self.tokens_seen = int(state["tokens_seen"])
