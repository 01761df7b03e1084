"""Which features fire together: co-activation counts over the pairs that actually co-occur.

Per token, every pair (i < j) of active features is one co-occurrence; counts are kept as a sorted
array of pair keys (i * d_sae + j) with counts, so memory follows the number of distinct active
pairs, never d_sae^2. The correlation of two features is the phi coefficient of their binary firing
(Pearson on 0/1), from the counts:

    phi = (N * n_ij - n_i * n_j) / sqrt(n_i (N - n_i) n_j (N - n_j))

Positive phi needs n_ij > 0, so the top correlated features of each feature are among its pairs.
Past `max_pairs` distinct pairs the pairs seen once are dropped (and `pruned` is set): the counts of
the rest stay exact, those of the dropped pairs become lower bounds.
"""

from __future__ import annotations

import numpy as np
import torch

_PAIRS_PER_STEP = 1 << 22  # co-occurrences generated at a time (int64 keys: 32 MiB)


class PairCounter:
    def __init__(self, d_sae: int, max_pairs: int = 1 << 25):
        self.d_sae = d_sae
        self.max_pairs = max_pairs
        self.keys = torch.zeros(0, dtype=torch.int64)
        self.counts = torch.zeros(0, dtype=torch.int64)
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._pending_size = 0
        self.pruned = False

    @torch.no_grad()
    def add(self, rows: torch.Tensor, feats: torch.Tensor) -> None:
        """Non-zero entries of a batch, as nonzero() gives them (rows ascending, features ascending within a row)."""
        if rows.numel() == 0:
            return
        rows, feats = rows.cpu(), feats.cpu()
        uniq, per_row = torch.unique_consecutive(rows, return_counts=True)
        width = int(per_row.max())
        if width < 2:
            return
        starts = torch.cumsum(per_row, 0) - per_row
        rank = torch.arange(rows.numel()) - torch.repeat_interleave(starts, per_row)
        row_slot = torch.repeat_interleave(torch.arange(uniq.numel()), per_row)
        padded = torch.full((uniq.numel(), width), -1, dtype=torch.int64)
        padded[row_slot, rank] = feats
        a, b = torch.triu_indices(width, width, offset=1)
        step = max(1, _PAIRS_PER_STEP // a.numel())
        for start in range(0, padded.shape[0], step):
            block = padded[start:start + step]
            fi, fj = block[:, a].reshape(-1), block[:, b].reshape(-1)
            ok = fj >= 0
            keys, counts = torch.unique(fi[ok] * self.d_sae + fj[ok], return_counts=True)
            self._pending.append((keys, counts))
            self._pending_size += keys.numel()
        if self._pending_size > max(self.keys.numel(), 1 << 22):
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = torch.cat([self.keys] + [k for k, _ in self._pending])
        counts = torch.cat([self.counts] + [c for _, c in self._pending])
        self._pending, self._pending_size = [], 0
        self.keys, inverse = torch.unique(keys, return_inverse=True)
        self.counts = torch.zeros_like(self.keys).index_add_(0, inverse, counts)
        if self.keys.numel() > self.max_pairs:
            keep = self.counts > 1
            self.keys, self.counts, self.pruned = self.keys[keep], self.counts[keep], True

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(i, j, co-occurrence count) with i < j, as numpy arrays."""
        self._merge()
        keys = self.keys.numpy()
        return keys // self.d_sae, keys % self.d_sae, self.counts.numpy()


def phi(n_ij, n_i, n_j, n_tokens: int):
    """Phi coefficient of two binary features from their counts (0 where either never or always fires)."""
    n_ij, n_i, n_j = (np.asarray(v, dtype=np.float64) for v in (n_ij, n_i, n_j))
    den = np.sqrt(n_i * (n_tokens - n_i) * n_j * (n_tokens - n_j))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (n_tokens * n_ij - n_i * n_j) / den
    return np.where(den > 0, out, 0.0)


def top_correlated(i, j, n_ij, count: np.ndarray, n_tokens: int, top: int = 10):
    """Per feature, its `top` partners by phi (ties: more co-occurrences first).
    Returns (feature, partner, phi, co_count) sorted by feature then rank."""
    p = phi(n_ij, count[i], count[j], n_tokens)
    feature = np.concatenate([i, j])
    partner = np.concatenate([j, i])
    both_phi = np.concatenate([p, p])
    both_n = np.concatenate([n_ij, n_ij])
    order = np.lexsort((-both_n, -both_phi, feature))
    feature, partner, both_phi, both_n = feature[order], partner[order], both_phi[order], both_n[order]
    first = np.searchsorted(feature, feature, side="left")
    keep = (np.arange(feature.size) - first) < top
    return feature[keep], partner[keep], both_phi[keep], both_n[keep]


def correlation_matrix(features: np.ndarray, i, j, n_ij, count: np.ndarray, n_tokens: int) -> np.ndarray:
    """Phi between every two of `features` (1 on the diagonal), [len(features), len(features)]."""
    features = np.asarray(features, dtype=np.int64)
    slot = np.full(count.size, -1, dtype=np.int64)
    slot[features] = np.arange(features.size)
    both = (slot[i] >= 0) & (slot[j] >= 0)
    co = np.zeros((features.size, features.size))
    co[slot[i][both], slot[j][both]] = n_ij[both]
    co = co + co.T
    n = count[features].astype(np.float64)
    matrix = phi(co, n[:, None], n[None, :], n_tokens)
    np.fill_diagonal(matrix, np.where(n > 0, 1.0, 0.0))
    return matrix
