"""The whole dictionary at a glance, from the per-feature counts.

- dead: never fired on the held-out tokens (the seed's `dead_neurons`; its SQL example counted
  frequency < 1 %, which on a TopK SAE would call most healthy features dead).
- dense: fired on more than DENSE_FIRING_FRACTION (10 %) of the tokens, the same threshold the
  trainer's dense_fraction uses.
- frequency distribution: histogram of log10(density) of the live features, fixed edges -8..0.
"""

from __future__ import annotations

import torch

from mistudio.features.histogram import frequency_histogram
from mistudio.sae.metrics import DENSE_FIRING_FRACTION


def dictionary_summary(count: torch.Tensor, n_tokens: int) -> dict:
    count = count.cpu()
    density = count.double() / max(1, n_tokens)
    total = int(count.numel())
    dead = int((count == 0).sum())
    dense = int((density > DENSE_FIRING_FRACTION).sum())
    avg = float(density.mean()) if total else 0.0
    return {
        "total_features": total,
        "avg_activation_frequency": avg,
        "dead_neurons": dead,
        "dead_features": dead,
        "dead_fraction": dead / total if total else 0.0,
        "dense_features": dense,
        "dense_threshold": DENSE_FIRING_FRACTION,
        "mean_l0": float(count.sum()) / max(1, n_tokens),
        "n_tokens": int(n_tokens),
        "frequency_histogram": frequency_histogram(density),
    }
