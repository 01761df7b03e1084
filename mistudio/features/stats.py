"""Per-feature statistics, streamed over batches of tokens: how often each feature fires
(density), its mean activation where it fires, its max, and a histogram of its non-zero
activations in fixed log-spaced bins (mistudio.features.histogram).

Only the non-zero entries of a batch are touched, so the cost follows L0, not d_sae; the
state is O(d_sae * bins), whatever the number of tokens.
"""

from __future__ import annotations

import torch

from mistudio.features import histogram


class FeatureStats:
    def __init__(self, d_sae: int, device: torch.device | str = "cpu"):
        self.d_sae = d_sae
        self.n_tokens = 0
        self.count = torch.zeros(d_sae, dtype=torch.int64, device=device)
        self.total = torch.zeros(d_sae, dtype=torch.float64, device=device)
        self.max = torch.zeros(d_sae, dtype=torch.float32, device=device)
        self.hist = torch.zeros(d_sae, histogram.N_BINS, dtype=torch.int64, device=device)

    @torch.no_grad()
    def add(self, acts: torch.Tensor, n_tokens: int, rows: torch.Tensor, feats: torch.Tensor,
            values: torch.Tensor) -> None:
        """One batch: dense acts [tokens, d_sae] (zero on tokens that do not count), the number of
        tokens that count, and its non-zero entries (rows, feats, values) as given by nonzero()."""
        self.n_tokens += int(n_tokens)
        self.count += torch.bincount(feats, minlength=self.d_sae)
        self.total.index_add_(0, feats, values.double())
        if acts.shape[0]:
            torch.maximum(self.max, acts.amax(dim=0).float(), out=self.max)
        flat = feats * histogram.N_BINS + histogram.bin_index(values)
        self.hist.view(-1).index_add_(0, flat, torch.ones_like(flat))

    def density(self) -> torch.Tensor:
        return self.count.double() / max(1, self.n_tokens)

    def mean(self) -> torch.Tensor:
        """Mean over the tokens where the feature fired (NaN for a feature that never fired)."""
        return torch.where(self.count > 0, self.total / self.count.clamp_min(1), torch.nan)
