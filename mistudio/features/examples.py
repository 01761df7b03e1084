"""Example contexts per feature, kept in bounded running "heaps" merged vectorised per batch.

- `TopContexts`: the k contexts where each feature reaches its highest activation (one entry
  per context: its peak token), state [2k, d_sae]: it keeps k spare entries because corpora
  repeat sentences, and `distinct_examples` then drops the windows that show the same tokens as
  a better one, so a card lists k different texts where the data has them.
- `Reservoir`: a uniform sample of each feature's non-zero activations (the R with the largest
  pseudo-random priority, a hash of (token, feature), so the sample does not depend on how the
  tokens were batched); `quantile_picks` then takes samples at activation quantiles.

Each entry carries its context index, the position of the token, and that feature's activation
on the +-window tokens around it, captured when the entry enters the heap (the dense batch is gone
afterwards). Memory: (2k + R) * d_sae * (2 * window + 1) floats, independent of the token count.
"""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_QUANTILES = (0.1, 0.3, 0.5, 0.7, 0.9)
_GATHER_CHUNK = 1 << 20  # window gathers at a time (int64 index: 8 bytes * window each)


class RunningTop:
    """The `size` entries with the largest keys per feature, with their windows."""

    def __init__(self, size: int, d_sae: int, window: int, device="cpu"):
        self.size, self.d_sae, self.window = size, d_sae, window
        shape = (size, d_sae)
        self.keys = torch.full(shape, -torch.inf, device=device)
        self.values = torch.zeros(shape, device=device)
        self.context = torch.full(shape, -1, dtype=torch.int64, device=device)
        self.position = torch.zeros(shape, dtype=torch.int64, device=device)
        self.windows = torch.zeros(size, d_sae, 2 * window + 1, device=device)

    @torch.no_grad()
    def offer(self, keys: torch.Tensor, values: torch.Tensor, ctx: torch.Tensor, pos: torch.Tensor,
              acts: torch.Tensor, ctx_offset: int) -> None:
        """Candidates [r, d_sae] (keys, values, context within the batch, position) from the dense
        batch acts [contexts, T, d_sae]; -inf keys are no candidate."""
        merged_keys, idx = torch.cat([self.keys, keys]).topk(self.size, dim=0)
        new = idx >= self.size
        old_idx = idx.clamp(max=self.size - 1)
        self.windows = self.windows.gather(0, old_idx[..., None].expand(-1, -1, self.windows.shape[2]))
        cand = (idx - self.size).clamp(min=0)
        new_ctx, new_pos = ctx.gather(0, cand), pos.gather(0, cand)
        self.values = torch.where(new, values.gather(0, cand), self.values.gather(0, old_idx))
        self.context = torch.where(new, new_ctx + ctx_offset, self.context.gather(0, old_idx))
        self.position = torch.where(new, new_pos, self.position.gather(0, old_idx))
        self.keys = merged_keys
        slot, feat = (new & (merged_keys > -torch.inf)).nonzero(as_tuple=True)
        for start in range(0, slot.numel(), _GATHER_CHUNK):
            s, f = slot[start:start + _GATHER_CHUNK], feat[start:start + _GATHER_CHUNK]
            self.windows[s, f] = gather_windows(acts, new_ctx[s, f], new_pos[s, f], f, self.window)

    def filled(self) -> torch.Tensor:
        return self.keys > -torch.inf


def gather_windows(acts: torch.Tensor, ctx: torch.Tensor, pos: torch.Tensor, feat: torch.Tensor,
                   window: int) -> torch.Tensor:
    """acts[ctx, pos + o, feat] for o in -window..window ([n, 2 * window + 1]; 0 outside the context)."""
    n_ctx, length, d_sae = acts.shape
    offsets = torch.arange(-window, window + 1, device=acts.device)
    p = pos[:, None] + offsets
    inside = (p >= 0) & (p < length)
    flat = (ctx[:, None] * length + p.clamp(0, length - 1)) * d_sae + feat[:, None]
    return acts.reshape(-1)[flat].float().masked_fill_(~inside, 0.0)


class TopContexts(RunningTop):
    def __init__(self, size: int, d_sae: int, window: int, device="cpu"):
        super().__init__(2 * size, d_sae, window, device)  # k spare entries for distinct_examples
        self.shown = size

    @torch.no_grad()
    def add(self, acts: torch.Tensor, ctx_offset: int) -> None:
        """A batch of whole contexts: acts [contexts, T, d_sae], zero on tokens that do not count."""
        peak, peak_pos = acts.max(dim=1)  # [contexts, d_sae]
        keys, ctx = peak.topk(min(self.size, peak.shape[0]), dim=0)
        values = keys.float()
        keys = keys.float().masked_fill(keys <= 0, -torch.inf)
        self.offer(keys, values, ctx, peak_pos.gather(0, ctx), acts, ctx_offset)


def distinct_examples(rows: dict, limit: int) -> dict:
    """Per feature, the first `limit` rows whose window tokens differ from every row before them.

    rows: arrays of one length, feature-major and best first within a feature (as the heaps
    give them), with "feature", "token_ids" [n, W] and "keep" [n, W] (which window tokens exist);
    "rank" is renumbered 0.. among the rows kept."""
    feature, n = rows["feature"], len(rows["feature"])
    if n == 0:
        return rows
    window_hash = np.zeros(n, dtype=np.uint64)
    shown = np.where(rows["keep"], rows["token_ids"] + 1, 0).astype(np.uint64)  # +1: token 0 is not "none"
    with np.errstate(over="ignore"):
        for column in shown.T:
            window_hash = window_hash * np.uint64(1_000_003) + column
    order = np.lexsort((np.arange(n), window_hash, feature))  # equal windows of a feature: best first
    same = (feature[order][1:] == feature[order][:-1]) & (window_hash[order][1:] == window_hash[order][:-1])
    repeated = np.zeros(n, dtype=bool)
    repeated[order[1:][same]] = True
    kept = np.flatnonzero(~repeated)
    kept_feature = feature[kept]
    starts = np.r_[0, np.flatnonzero(kept_feature[1:] != kept_feature[:-1]) + 1]
    rank = np.arange(kept.size) - np.repeat(starts, np.diff(np.r_[starts, kept.size]))
    chosen = rank < limit
    out = {key: value[kept[chosen]] for key, value in rows.items()}
    out["rank"] = rank[chosen]
    return out


def priorities(rows: torch.Tensor, d_sae: int, seed: int = 0) -> torch.Tensor:
    """A pseudo-random number in [0, 1) for each (global token row, feature): [len(rows), d_sae]."""
    feats = torch.arange(d_sae, device=rows.device, dtype=torch.int64)
    h = torch.add(feats[None, :] * 40503 + seed * 97, rows[:, None] * 2654435761)
    for shift, multiplier in ((15, 0x2C1B3C6D), (12, 0x297A2D39)):  # integer mixing, in place
        h.bitwise_xor_(h >> shift).mul_(multiplier)
    h.bitwise_xor_(h >> 15)
    return (h & 0xFFFFFF).float() / float(1 << 24)


class Reservoir(RunningTop):
    def __init__(self, size: int, d_sae: int, window: int, device="cpu", seed: int = 0):
        super().__init__(size, d_sae, window, device)
        self.seed = seed

    @torch.no_grad()
    def add(self, acts: torch.Tensor, ctx_offset: int) -> None:
        n_ctx, length, d_sae = acts.shape
        flat = acts.reshape(-1, d_sae)
        rows = torch.arange(flat.shape[0], device=acts.device) + ctx_offset * length
        pri = priorities(rows, d_sae, self.seed).masked_fill_(flat <= 0, -torch.inf)
        keys, row = pri.topk(min(self.size, flat.shape[0]), dim=0)
        self.offer(keys, flat.gather(0, row).float(), row // length, row % length, acts, ctx_offset)

    def quantile_picks(self, quantiles=DEFAULT_QUANTILES) -> tuple[torch.Tensor, torch.Tensor]:
        """(slots [len(quantiles), d_sae], ok mask): the sampled entry at each activation quantile
        of each feature's sample (nearest rank); ok is False for a feature with no sample."""
        filled = self.filled()
        n = filled.sum(dim=0)
        order = torch.where(filled, self.values, torch.inf).argsort(dim=0)
        q = torch.tensor(quantiles, device=n.device, dtype=torch.float64)[:, None]
        rank = torch.floor(q * (n[None, :] - 1).clamp_min(0) + 0.5).long()
        return order.gather(0, rank), (n > 0)[None, :].expand(len(quantiles), -1)
