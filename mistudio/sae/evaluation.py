"""CE-loss recovered: how much of the model's next-token performance survives the SAE.

    recovered = (ce_zero - ce_spliced) / (ce_zero - ce_clean)

ce_clean: the model as is; ce_spliced: the hook point's activation replaced by its SAE
reconstruction; ce_zero: replaced by zeros. 1.0 means the SAE loses nothing; 0.0 means it
is as bad as deleting the activation. Needs a model with an LM head (causal LM).
Clean and zero-ablated losses do not depend on the SAE: computed once, reused at every eval.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from mistudio.errors import InvalidInput
from mistudio.models.hooks import parse_hook_point, patch_activation, run_model

Reconstruct = Callable[[torch.Tensor], torch.Tensor]


def _module(model: Any) -> torch.nn.Module:
    """Accept a LoadedModel (anything with `.model`) where a model is expected."""
    return model if isinstance(model, torch.nn.Module) else getattr(model, "model", model)


def has_lm_head(model: Any) -> bool:
    get = getattr(_module(model), "get_output_embeddings", None)
    return callable(get) and get() is not None


class CELossEvaluator:
    """Callable evaluator for the trainer: `evaluator(reconstruct) -> metrics dict`."""

    def __init__(
        self,
        model: Any,
        hook_point: str,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        batch_size: int = 8,
    ):
        self.model = _module(model)
        if not has_lm_head(self.model):
            raise InvalidInput(
                "model", f"{type(self.model).__name__} has no LM head", "CE-loss recovered needs a causal LM; skip it for encoders"
            )
        parse_hook_point(hook_point)
        if input_ids.ndim != 2 or input_ids.shape[1] < 2:
            raise InvalidInput("input_ids", f"shape {tuple(input_ids.shape)}", "give [n_sequences, seq_len >= 2] token ids")
        self.hook_point = hook_point
        self.input_ids = input_ids
        self.attention_mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        self.batch_size = batch_size
        self._fixed: dict[str, float] | None = None

    @torch.no_grad()
    def cross_entropy(self, replace: Reconstruct | None = None) -> float:
        """Mean next-token CE over all real (unpadded) target tokens, optionally with the activation replaced."""
        total, count = 0.0, 0
        for start in range(0, self.input_ids.shape[0], self.batch_size):
            ids = self.input_ids[start : start + self.batch_size]
            mask = self.attention_mask[start : start + self.batch_size]
            if replace is None:
                logits = run_model(self.model, ids, mask).logits
            else:
                with patch_activation(self.model, self.hook_point, replace):
                    logits = run_model(self.model, ids, mask).logits
            targets = ids[:, 1:].to(logits.device).long()  # packed token ids are int32
            keep = (mask[:, 1:] * mask[:, :-1]).to(logits.device).bool()
            losses = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets.flatten(), reduction="none")
            total += float(losses[keep.flatten()].sum())
            count += int(keep.sum())
        return total / max(count, 1)

    def __call__(self, reconstruct: Reconstruct) -> dict[str, float]:
        if self._fixed is None:
            self._fixed = {"ce_clean": self.cross_entropy(), "ce_zero": self.cross_entropy(torch.zeros_like)}
        spliced = self.cross_entropy(reconstruct)
        clean, zero = self._fixed["ce_clean"], self._fixed["ce_zero"]
        gap = zero - clean
        return {
            "ce_clean": clean,
            "ce_spliced": spliced,
            "ce_zero": zero,
            "ce_loss_recovered": (zero - spliced) / gap if gap != 0 else float("nan"),
        }


def ce_loss_recovered(model: Any, hook_point: str, input_ids: torch.Tensor, reconstruct: Reconstruct, **kw) -> dict:
    """One-off CE-loss recovered for a reconstruction function (e.g. `load_sae(path)` on raw activations)."""
    return CELossEvaluator(model, hook_point, input_ids, **kw)(reconstruct)
