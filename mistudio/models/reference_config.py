"""The reference causal LM's settings and its saved card: light (no torch), for submit-time checks.

`mistudio.reference_model` builds the model from a `ReferenceConfig`; the sizes of the default
profile train in minutes on two CPU cores, the `ci` profile's (2 x 64, 120 steps) in a fraction of that.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mistudio.errors import InvalidInput
from mistudio.models.folders import reference_model_path
from mistudio.settings import get_settings

CARD = "reference.json"  # what was trained, how, and its held-out loss, beside config.json


@dataclass(frozen=True)
class ReferenceConfig:
    """Sizes and schedule of the reference LM. `for_profile()` picks them from MISTUDIO_PROFILE."""

    # 4 x 128 wide: up to ~8k tokens/s on two CPU cores (4 x 256 ran ~500 under load), so 1200 steps (2.5M tokens,
    # ~5 epochs of the corpus) take minutes, not an hour.
    vocab_size: int = 4096
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    context_length: int = 128
    batch_size: int = 16
    steps: int = 1200
    learning_rate: float = 3e-3
    warmup_steps: int = 30
    weight_decay: float = 0.01
    corpus_max_tokens: int = 2_000_000  # more than the corpus holds: all of it
    eval_every: int = 100
    eval_tokens: int = 16_384  # held-out tokens per eval
    checkpoint_every: int = 200
    seed: int = 0

    def check(self) -> ReferenceConfig:
        for name in ("vocab_size", "n_layer", "n_embd", "n_head", "context_length", "batch_size", "steps",
                     "corpus_max_tokens", "eval_every", "eval_tokens", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidInput(name, f"must be a positive integer, got {value!r}", "use the default or e.g. 4")
        if self.vocab_size < 300:
            raise InvalidInput("vocab_size", f"{self.vocab_size} is below the 256 bytes plus merges",
                               "use 1024 or more (4096 by default)")
        if self.n_embd % self.n_head:
            raise InvalidInput("n_head", f"{self.n_head} does not divide n_embd={self.n_embd}",
                               "pick n_head so that n_embd / n_head is whole (e.g. 4 for 256)")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise InvalidInput("learning_rate", f"must be a positive number, got {self.learning_rate!r}", "use 3e-3")
        return self


PROFILE_CONFIGS = {
    "default": ReferenceConfig(),
    # Notebooks under nbval and CI: a 2 x 64 model, 120 short steps.
    "ci": ReferenceConfig(vocab_size=1024, n_layer=2, n_embd=64, n_head=2, context_length=64, batch_size=16,
                          steps=120, learning_rate=5e-3, warmup_steps=10, corpus_max_tokens=120_000,
                          eval_every=40, eval_tokens=4096, checkpoint_every=40),
}


def for_profile(**overrides) -> ReferenceConfig:
    """The reference config of the current MISTUDIO_PROFILE, with overrides (e.g. seed=1)."""
    base = PROFILE_CONFIGS.get(get_settings().profile.name, PROFILE_CONFIGS["default"])
    unknown = sorted(set(overrides) - set(asdict(base)))
    if unknown:
        raise InvalidInput(unknown[0], "is not a reference LM setting", f"use one of {', '.join(asdict(base))}")
    return replace(base, **overrides).check()


def reference_card(path: Path | str | None = None) -> dict | None:
    """The saved model card of a built reference LM (None if it is not built)."""
    file = Path(path or reference_model_path()) / CARD
    return json.loads(file.read_text()) if file.is_file() else None
