"""The causal effect of a feature: how much worse the model predicts the next token without it.

For a (feature i, context) pair the hook point's activation x becomes x - a_i(x) * W_dec[i] on every
counted token (a_i: the SAE's activation of feature i there): the error-preserving splice, which
removes that one feature and keeps the SAE's reconstruction error, so nothing else changes. The
effect is the increase in next-token cross-entropy (nats), ablated minus clean:

- `peak`: at the prediction made from the feature's peak token (of the next token after it);
- `window`: averaged over the predictions from the peak token to `window` tokens after it (what a
  card's context shows; a feature often fires on several of those tokens).

A pair without a real next token gives nan. Rows are batched over pairs (any mix of features), cut
at the last token their window needs (the model is causal), and the clean pass runs on the same
batch, so a feature that does not fire changes nothing: its effect is exactly 0. No Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from mistudio.errors import InvalidInput
from mistudio.models.hooks import parse_hook_point, patch_activation, run_model
from mistudio.sae.evaluation import require_lm_head

FLOAT_COPIES = 3  # float32 [rows, tokens, d_sae + vocab] buffers alive at once (latents, logits, log-softmax)


@dataclass
class AblationEffects:
    peak: np.ndarray  # [pairs] loss increase at the prediction from the peak token (nan: no next token)
    window: np.ndarray  # [pairs] mean loss increase over the predictions from the peak token on


def rows_per_batch(length: int, d_sae: int, vocab: int, memory_budget: int) -> int:
    """Pairs per forward pass so that latents and logits stay within half the budget."""
    return max(1, (memory_budget // 2) // (length * (d_sae + vocab) * 4 * FLOAT_COPIES))


def ablate_feature(sae, features: torch.Tensor, counted: torch.Tensor | None = None) -> Callable:
    """A hook-point replacement for `patch_activation`: row r of the batch loses feature features[r]
    (x - a * W_dec[f], reconstruction error kept), on the tokens where counted[r] is true."""

    def replace(act: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = sae.encode(act.to(sae.W_dec.dtype))  # [rows, T, d_sae]
            rows = torch.arange(act.shape[0], device=z.device)
            a = z[rows, :, features.to(z.device)]  # [rows, T]
            if counted is not None:
                a = a * counted.to(a.device, a.dtype)
            direction = sae.W_dec[features.to(sae.W_dec.device)]  # [rows, d_in]
            return act - (a[..., None] * direction[:, None, :]).to(act.dtype)

    return replace


def _next_token_losses(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logits = run_model(model, ids, mask).logits[:, :-1].float()
    targets = ids[:, 1:].to(logits.device).long()
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape)


@torch.no_grad()
def ablation_effects(
    model: Any,
    hook_point: str,
    sae,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    features: torch.Tensor,
    positions: torch.Tensor,
    *,
    activation_mask: torch.Tensor | None = None,
    window: int = 10,
    memory_budget: int = 2**30,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> AblationEffects | None:
    """Effects for pairs: row r is the context input_ids[r] [T] (its masks alike), ablating feature
    features[r] whose peak is at positions[r]. activation_mask: the tokens where features count
    (special tokens excluded), where the ablation applies; default all real tokens.
    Returns None if should_stop() said so between batches."""
    module = require_lm_head(model, "the ablation effect")
    parse_hook_point(hook_point)
    n, length = input_ids.shape
    features, positions = torch.as_tensor(features).long().cpu(), torch.as_tensor(positions).long().cpu()
    if features.shape != (n,) or positions.shape != (n,):
        raise InvalidInput("features", f"need one feature and one position per row ({n} rows)",
                           "pass features and positions of shape [rows]")
    if n and not (0 <= int(features.min()) and int(features.max()) < sae.d_sae):
        raise InvalidInput("features", f"indices must be in 0..{sae.d_sae - 1}", "pick features of this SAE")
    counted = attention_mask if activation_mask is None else activation_mask
    need = (positions + window + 2).clamp(max=length)  # tokens each row's last prediction needs
    order = torch.argsort(need, stable=True)  # similar lengths batch together
    vocab = module.get_output_embeddings().weight.shape[0]
    peak, mean = np.full(n, np.nan), np.full(n, np.nan)
    done = 0
    while done < n:
        if should_stop is not None and should_stop():
            return None
        size = lambda tokens: rows_per_batch(tokens, sae.d_sae, vocab, memory_budget)  # noqa: E731
        step = size(int(need[order[done]]))
        step = min(step, size(int(need[order[min(n, done + step) - 1]])))  # ascending: the last row is the longest
        rows = order[done:done + step]
        cut = int(need[rows].max())
        ids, mask = input_ids[rows, :cut], attention_mask[rows, :cut]
        clean = _next_token_losses(module, ids, mask)
        with patch_activation(module, hook_point, ablate_feature(sae, features[rows], counted[rows, :cut])):
            ablated = _next_token_losses(module, ids, mask)
        delta = (ablated - clean).cpu().double()  # [rows, cut - 1]: position t predicts token t + 1
        real = (mask[:, 1:] * mask[:, :-1]).bool().cpu()
        t = torch.arange(cut - 1)
        in_window = real & (t >= positions[rows, None]) & (t <= positions[rows, None] + window)
        count = in_window.sum(dim=1)
        sums = torch.where(in_window, delta, 0.0).sum(dim=1)
        at_peak = in_window & (t == positions[rows, None])
        idx = rows.numpy()
        mean[idx] = torch.where(count > 0, sums / count.clamp(min=1), torch.nan).numpy()
        peak[idx] = torch.where(at_peak.any(dim=1), torch.where(at_peak, delta, 0.0).sum(dim=1), torch.nan).numpy()
        done += rows.numel()
        if progress is not None:
            progress(done, n)
    return AblationEffects(peak=peak, window=mean)


def per_feature(d_sae: int, features: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean over each feature's pairs, ignoring nan; how many pairs counted), each [d_sae]."""
    ok = ~np.isnan(values)
    count = np.bincount(features[ok], minlength=d_sae)
    total = np.bincount(features[ok], weights=values[ok], minlength=d_sae)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan), count
