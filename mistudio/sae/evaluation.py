"""Causal metrics of an SAE spliced into its model: CE-loss recovered and KL divergence.

    recovered = (ce_zero - ce_spliced) / (ce_zero - ce_clean)
    kl        = mean over tokens of KL(p_clean || p_spliced)   (next-token distributions, nats)

ce_clean: the model as is; ce_spliced: the hook point's activation replaced by its SAE
reconstruction; ce_zero: replaced by zeros. 1.0 recovered means the SAE loses nothing; 0.0 means
it is as bad as deleting the activation. KL says how far the whole next-token distribution moves,
not only the probability of the actual next token (0 for a perfect reconstruction). Both are
measured on the same held-out tokens and need a model with an LM head (causal LM).
Clean and zero-ablated losses do not depend on the SAE: computed once, reused at every eval; so
are the clean log-probabilities while they fit in `clean_cache_bytes` (else recomputed per eval).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from mistudio.errors import InvalidInput
from mistudio.models.hooks import parse_hook_point, patch_activation, run_model

Reconstruct = Callable[[torch.Tensor], torch.Tensor]
CLEAN_CACHE_BYTES = 256 * 2**20  # clean log-probs [tokens, vocab] kept between evals up to this size


def _module(model: Any) -> torch.nn.Module:
    """Accept a LoadedModel (anything with `.model`) where a model is expected."""
    return model if isinstance(model, torch.nn.Module) else getattr(model, "model", model)


def has_lm_head(model: Any) -> bool:
    get = getattr(_module(model), "get_output_embeddings", None)
    return callable(get) and get() is not None


def require_lm_head(model: Any, what: str) -> torch.nn.Module:
    module = _module(model)
    if not has_lm_head(module):
        raise InvalidInput("model", f"{type(module).__name__} has no LM head",
                           f"{what} needs a causal LM (e.g. openai-community/gpt2); skip it for encoders")
    return module


def next_token_log_probs(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor):
    """(log-probs [n, vocab], target ids [n]) of the real next-token predictions of a batch: position
    t predicts token t + 1 where both are real (unpadded) tokens."""
    keep = (mask[:, 1:] * mask[:, :-1]).to(logits.device).bool()
    log_probs = F.log_softmax(logits[:, :-1].float(), dim=-1)[keep]
    return log_probs, input_ids[:, 1:].to(logits.device).long()[keep]  # packed token ids are int32


class CELossEvaluator:
    """Callable evaluator for the trainer: `evaluator(reconstruct) -> metrics dict`."""

    def __init__(
        self,
        model: Any,
        hook_point: str,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        batch_size: int = 8,
        clean_cache_bytes: int = CLEAN_CACHE_BYTES,
    ):
        self.model = require_lm_head(model, "CE-loss recovered")
        parse_hook_point(hook_point)
        if input_ids.ndim != 2 or input_ids.shape[1] < 2:
            raise InvalidInput("input_ids", f"shape {tuple(input_ids.shape)}", "give [n_sequences, seq_len >= 2] token ids")
        self.hook_point = hook_point
        self.input_ids = input_ids
        self.attention_mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        self.batch_size = batch_size
        self.clean_cache_bytes = clean_cache_bytes
        self._fixed: dict[str, float] | None = None
        self._clean: list[torch.Tensor] | None = None  # per batch: clean log-probs, when they fit

    def _batches(self):
        for start in range(0, self.input_ids.shape[0], self.batch_size):
            yield self.input_ids[start : start + self.batch_size], self.attention_mask[start : start + self.batch_size]

    def _log_probs(self, ids, mask, replace: Reconstruct | None):
        if replace is None:
            return next_token_log_probs(run_model(self.model, ids, mask).logits, ids, mask)
        with patch_activation(self.model, self.hook_point, replace):
            return next_token_log_probs(run_model(self.model, ids, mask).logits, ids, mask)

    @torch.no_grad()
    def cross_entropy(self, replace: Reconstruct | None = None) -> float:
        """Mean next-token CE over all real (unpadded) target tokens, optionally with the activation replaced."""
        return self._evaluate(replace)[0]

    @torch.no_grad()
    def _evaluate(self, replace: Reconstruct | None, kl: bool = False) -> tuple[float, float]:
        """(mean CE, mean KL from the clean distribution; nan unless kl) over the real target tokens."""
        ce, divergence, count = 0.0, 0.0, 0
        for index, (ids, mask) in enumerate(self._batches()):
            log_probs, targets = self._log_probs(ids, mask, replace)
            ce -= float(log_probs.gather(1, targets[:, None]).sum())
            count += targets.numel()
            if kl:
                clean = self._clean[index] if self._clean is not None else self._log_probs(ids, mask, None)[0]
                divergence += float(F.kl_div(log_probs, clean, reduction="sum", log_target=True))
        n = max(count, 1)
        return ce / n, (divergence / n if kl else float("nan"))

    @torch.no_grad()
    def _clean_pass(self) -> float:
        """Clean CE; keeps the clean log-probs for the KL of later evals if they fit the cache."""
        n = int((self.attention_mask[:, 1:] * self.attention_mask[:, :-1]).sum())
        keep = n * self.model.get_output_embeddings().weight.shape[0] * 4 <= self.clean_cache_bytes
        ce, cached = 0.0, []
        for ids, mask in self._batches():
            log_probs, targets = self._log_probs(ids, mask, None)
            ce -= float(log_probs.gather(1, targets[:, None]).sum())
            if keep:
                cached.append(log_probs)
        self._clean = cached if keep else None
        return ce / max(n, 1)

    def __call__(self, reconstruct: Reconstruct) -> dict[str, float]:
        if self._fixed is None:
            self._fixed = {"ce_clean": self._clean_pass(), "ce_zero": self.cross_entropy(torch.zeros_like)}
        spliced, kl = self._evaluate(reconstruct, kl=True)
        clean, zero = self._fixed["ce_clean"], self._fixed["ce_zero"]
        gap = zero - clean
        return {
            "ce_clean": clean,
            "ce_spliced": spliced,
            "ce_zero": zero,
            "ce_loss_recovered": (zero - spliced) / gap if gap != 0 else float("nan"),
            "kl_divergence": kl,
        }


def ce_loss_recovered(model: Any, hook_point: str, input_ids: torch.Tensor, reconstruct: Reconstruct, **kw) -> dict:
    """One-off CE-loss recovered and KL for a reconstruction function (e.g. `load_sae(path)` on raw activations)."""
    return CELossEvaluator(model, hook_point, input_ids, **kw)(reconstruct)
