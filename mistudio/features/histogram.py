"""Fixed log-spaced bins for non-zero activations: the same edges for every feature and every run,
so histograms from batches (or devices) merge by adding counts.

Bin 0 holds (0, LOW), bins 1..n hold [LOW * 10^((i-1)/PER_DECADE), LOW * 10^(i/PER_DECADE)),
and the last bin holds [HIGH, inf). 16 bins per decade from 1e-4 to 1e4: 130 counters per feature.
"""

from __future__ import annotations

import math

import torch

LOG10_LOW, LOG10_HIGH, PER_DECADE = -4, 4, 16
N_INNER = (LOG10_HIGH - LOG10_LOW) * PER_DECADE
N_BINS = N_INNER + 2  # underflow + inner + overflow


def bin_index(values: torch.Tensor) -> torch.Tensor:
    """Bin of each positive value (int64, same shape)."""
    inner = torch.floor((torch.log10(values.double()) - LOG10_LOW) * PER_DECADE).long() + 1
    return inner.clamp_(0, N_BINS - 1)


def edges(first: int = 0, count: int = N_BINS) -> list[float]:
    """Edges of bins first..first+count-1 (count + 1 numbers). The open-ended under/overflow bins
    get one bin width beyond their finite edge, for drawing (their counts are exact)."""
    out = []
    for i in range(first, first + count + 1):
        exponent = LOG10_LOW + (min(max(i, 0), N_BINS) - 1) / PER_DECADE
        out.append(10.0 ** exponent)
    return out


def trim(counts: list[int] | torch.Tensor) -> tuple[int, list[int]]:
    """(first non-empty bin, counts from there to the last non-empty one); (0, []) when all are 0."""
    counts = [int(c) for c in counts]
    nonzero = [i for i, c in enumerate(counts) if c]
    if not nonzero:
        return 0, []
    return nonzero[0], counts[nonzero[0]:nonzero[-1] + 1]


def spec() -> dict:
    """The bin definition, as stored in summary.json."""
    return {"log10_low": LOG10_LOW, "log10_high": LOG10_HIGH, "per_decade": PER_DECADE, "n_bins": N_BINS}


def log10_edges(start: float, stop: float, step: float) -> list[float]:
    n = int(round((stop - start) / step))
    return [round(start + i * step, 10) for i in range(n + 1)]


def frequency_histogram(density: torch.Tensor, lo: float = -8.0, step: float = 0.25) -> dict:
    """Histogram of log10(density) over the live features (fixed edges lo..0); dead ones counted apart."""
    live = density[density > 0].double()
    bin_edges = log10_edges(lo, 0.0, step)
    n = len(bin_edges) - 1
    if live.numel():
        idx = torch.floor((torch.log10(live) - lo) / step).long().clamp_(0, n - 1)
        counts = torch.bincount(idx, minlength=n).tolist()
    else:
        counts = [0] * n
    return {"edges": bin_edges, "counts": counts, "dead": int((density <= 0).sum()),
            "below_range": int((live < 10 ** lo).sum()) if math.isfinite(lo) else 0}
