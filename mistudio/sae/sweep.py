"""What the members of a sweep (many SAEs trained on one activation pass, sae/multi.py) must
share, checked without torch: `mistudio train` validates a sweep at submit in well under a second."""

from __future__ import annotations

from mistudio.errors import InvalidInput
from mistudio.sae.config import default_lr

# The members step in lockstep on one stream of batches (one pass of the model), so these are
# one value for the whole sweep. A member's seed seeds its SAE; the stream is shuffled with
# member 0's (the same batches for every member).
SHARED_FIELDS = ("model", "dataset", "device", "batch_size", "steps", "checkpoint_every", "log_every", "eval_every")
MAX_MEMBERS = 64
_KEEP_FIX = "keep 2 or more: a crash between two members' checkpoints then resumes both from the step before"


def check_shared(configs: list, field_prefix: str = "sweep") -> None:
    """InvalidInput naming the member and field (e.g. "sweep[1].batch_size") when members disagree on
    what they must share, or keep fewer than 2 checkpoints (one sweep of several members)."""
    first = configs[0]
    for i, cfg in enumerate(configs):
        for name in SHARED_FIELDS:
            if getattr(cfg, name) != getattr(first, name):
                raise InvalidInput(f"{field_prefix}[{i}].{name}",
                                   f"is {getattr(cfg, name)!r}, member 0 has {getattr(first, name)!r}: the members "
                                   "of a sweep train on one stream of batches, in lockstep",
                                   f"set {name} once for the whole sweep (outside the member list)")
        if len(configs) > 1 and cfg.keep_checkpoints < 2:
            raise InvalidInput(f"{field_prefix}[{i}].keep_checkpoints", "must be >= 2 in a sweep", _KEEP_FIX)


# Fields that differ between members but say nothing a reader needs (d_in is the model's).
_UNLABELLED = ("d_in",)


def labels(configs: list[dict]) -> list[str]:
    """A short name per member from the fields where members differ, e.g. "k=32 d_sae=3072"
    (config JSON dicts, as the job record holds them)."""
    if len(configs) < 2:
        return ["" for _ in configs]
    names = [k for k in configs[0] if k not in _UNLABELLED
             and any(cfg.get(k) != configs[0].get(k) for cfg in configs[1:])]
    if "d_sae" in names and "expansion_factor" in names:  # one width is enough
        names.remove("expansion_factor")
    if "lr" in names and all(
            cfg.get("d_sae") and cfg.get("lr") == default_lr(cfg["d_sae"], cfg.get("architecture", "topk"))
            for cfg in configs):
        names.remove("lr")  # each member's lr is its width's default: the width already names it
    return [" ".join(f"{k}={_short(cfg.get(k))}" for k in names) or f"member {i}" for i, cfg in enumerate(configs)]


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and value.startswith("blocks."):
        return value.removeprefix("blocks.").replace("hook_", "")  # "3.resid_post"
    return str(value)
