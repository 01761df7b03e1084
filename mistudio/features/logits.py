"""What each feature's decoder direction does to the next-token logits, directly: the rows of
W_dec @ W_U^T (the residual stream straight into the unembedding, final LayerNorm ignored, as
SAE dashboards do). Only for models with an LM head; None otherwise (e.g. MiniLM)."""

from __future__ import annotations

import torch

_ROWS_BYTES = 64 * 2**20  # [features, vocab] floats computed at a time


def unembedding(model) -> torch.Tensor | None:
    """W_U [vocab, d_model] of a transformers model (or LoadedModel), None without an LM head."""
    if not isinstance(model, torch.nn.Module):  # a LoadedModel (a CausalLM's own .model is its trunk)
        model = model.model
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return None if head is None else head.weight.detach()


@torch.no_grad()
def top_logits(W_dec: torch.Tensor, W_U: torch.Tensor, top: int = 10):
    """(positive values, positive ids, negative values, negative ids), each [d_sae, top]: the most
    promoted tokens (largest first) and the most suppressed (most negative first)."""
    d_sae, vocab = W_dec.shape[0], W_U.shape[0]
    top = min(top, vocab)
    W_U = W_U.to(W_dec.device, torch.float32)
    step = max(1, _ROWS_BYTES // (4 * vocab))
    out = [[], [], [], []]
    for start in range(0, d_sae, step):
        logits = W_dec[start:start + step].float() @ W_U.t()
        pos = logits.topk(top, dim=1)
        neg = logits.topk(top, dim=1, largest=False)
        for lst, t in zip(out, (pos.values, pos.indices, neg.values, neg.indices)):
            lst.append(t.cpu())
    return tuple(torch.cat(lst) for lst in out)
