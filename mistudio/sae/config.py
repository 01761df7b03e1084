"""SAE and training configuration, validated before anything is queued.

`TrainingConfig` is flat (one JSON object through Redis) and extends `SAEConfig`, the part
that defines the model. Defaults that depend on the machine's profile (batch size, token
budget, k, expansion) are resolved when the config is built, so the JSON a worker receives
is exactly what the user saw. Every error is an `InvalidInput` naming the field and a fix.

Types are strict (no `k: true` read as 1, no "1e-3" string read as a number), sizes have upper
bounds, and `check_memory` compares what training will hold with MISTUDIO_MEMORY_BUDGET. No
torch here: `mistudio train` validates a config in a fraction of a second.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mistudio.errors import InvalidInput
from mistudio.models.hook_names import parse_hook_point
from mistudio.sae.registry import K_SPARSE_RECIPE, PENALTY_RECIPE, built_in, check_architecture, get
from mistudio.settings import get_settings
from mistudio.validation import preview

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d{1,2})?")

# Upper bounds, far above any real run, that catch typos before they become a 1.5 TB allocation
# or a job that never ends. The memory budget (check_memory) is the finer check.
MAX_D_SAE = 2**24  # 16.8M latents: the largest SAEs published
MAX_EXPANSION = 1024
MAX_STEPS = 10_000_000  # ~2 weeks at the default run's 7 steps/s on a 2-core CPU
MAX_BATCH = 2**20  # tokens per step
MAX_LR = 1.0  # Adam steps of this size already wreck an SAE; NaN comes later (trainer.py)
MAX_SEED = 2**32 - 1  # numpy's seed range

# The learning rate when none is given comes from the architecture's recipe (sae/registry.py): a
# fixed lr, or LR / sqrt(d_sae / 16384), the width scaling of Gao et al. 2024 (sparsify's auto lr has
# the same form), with the constant chosen by benchmarks/bench_recipe.py on held-out activations
# (README "The training recipe" has the figures). Below LR_MIN_WIDTH latents it stays at that
# width's value: the law was fit on large dictionaries, and extrapolated to a toy SAE of 64
# latents it would ask for 16x the lr of 16k.
LR_REF_WIDTH = 2**14
LR_MIN_WIDTH = 1024


def default_lr(d_sae: int | None, architecture: str = "topk") -> float | None:
    """The learning rate of a run that gives none (None: it scales with a width not known yet)."""
    recipe = get(architecture).recipe
    if not recipe.width_scaled:
        return recipe.lr
    if d_sae is None:
        return None
    return recipe.lr * math.sqrt(LR_REF_WIDTH / max(d_sae, LR_MIN_WIDTH))


# Names other libraries use for our fields (SAELens, sparsify, dictionary_learning).
_ALIASES = {
    "learning_rate": "lr",
    "hook_name": "hook_point",
    "hook": "hook_point",
    "model_name": "model",
    "dataset_path": "dataset",
    "num_latents": "d_sae",
    "dict_size": "d_sae",
    "training_tokens": "total_tokens",
    "l1_coeff": "l1_coefficient",
    "auxk_alpha": "aux_k_coefficient",
    "lr_warm_up_steps": "lr_warmup_steps",
}


def _profile():
    return get_settings().profile


class _Validated(BaseModel):
    """Turns pydantic's errors into InvalidInput (field, problem, fix)."""

    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True)

    def __init__(self, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise _to_invalid_input(type(self), e) from None

    @classmethod
    def model_validate(cls, obj: Any, **kw):  # type: ignore[override]
        try:
            return super().model_validate(obj, **kw)
        except ValidationError as e:
            raise _to_invalid_input(cls, e) from None

    @classmethod
    def model_validate_json(cls, data, **kw):  # type: ignore[override]
        try:
            return super().model_validate_json(data, **kw)
        except ValidationError as e:
            raise _to_invalid_input(cls, e) from None


def _to_invalid_input(cls: type[BaseModel], e: ValidationError) -> InvalidInput:
    err = e.errors()[0]
    original = (err.get("ctx") or {}).get("error")
    if isinstance(original, InvalidInput):
        return original
    field = ".".join(str(p) for p in err["loc"]) or cls.__name__
    more = f" (and {len(e.errors()) - 1} more problem(s))" if len(e.errors()) > 1 else ""
    if err["type"] == "extra_forbidden":
        close = [_ALIASES[field]] if field in _ALIASES else difflib.get_close_matches(field, cls.model_fields, n=1)
        fix = f"did you mean {close[0]!r}?" if close else f"remove it; known fields: {', '.join(cls.model_fields)}"
        return InvalidInput(field, "unknown field" + more, fix)
    info = cls.model_fields.get(field)
    fix = f"{field} is {info.description}" if info is not None and info.description else None
    got = f", got {preview(err['input'])} ({type(err['input']).__name__})" if "input" in err and err["type"] != "missing" else ""
    return InvalidInput(field, err["msg"] + got + more, fix)


class SAEConfig(_Validated):
    """What defines the SAE itself (kept in cfg.json of checkpoints and exports)."""

    architecture: str = Field("topk", description="the SAE type: a name in mistudio.sae.registry")
    d_in: int | None = Field(None, description="the activation width; None: taken from the model / first batch")
    d_sae: int | None = Field(None, description="number of latents; None: expansion_factor * d_in")
    expansion_factor: int | None = Field(None, description="d_sae / d_in when d_sae is not given (profile default)")
    k: int | None = Field(None, description="active latents per token")
    l1_coefficient: float | None = Field(None, description="the weight of the L1 sparsity penalty")
    l0_coefficient: float | None = Field(None, description="the weight of the L0 sparsity penalty")
    aux_k: int | None = Field(None, description="dead latents the AuxK loss uses (None: d_in // 2)")
    aux_k_coefficient: float = Field(1 / 32, description="the weight of the AuxK dead-latent loss")
    # JumpReLU: sized to the first pre-activations, which the recipe's encoder scale of 0.1 makes a
    # tenth of a full-scale tied init's: with it, 0.05 / 0.05 reached held-out FVU 0.10 at L0 178 on
    # MiniLM (README "The training recipe"); 0.5 / 0.5 with a full-scale init 0.29 at L0 86.
    jumprelu_bandwidth: float = Field(0.05, description="width of the STE kernel around the JumpReLU threshold")
    jumprelu_init_threshold: float = Field(0.05, description="initial JumpReLU threshold (normalised units)")
    batchtopk_threshold_lr: float = Field(
        0.01, description="running-average rate of the BatchTopK inference threshold"
    )
    sparse_kernels: bool = Field(True, description="use the sparse TopK kernels (False: the dense reference)")
    normalize_activations: bool = Field(
        True, description="scale inputs to mean norm sqrt(d_in) while training (folded into the export)"
    )
    dtype: Literal["float32", "float64"] = Field("float32", description="parameter dtype (bf16 autocast is separate)")

    @model_validator(mode="after")
    def _check_sae(self):
        architecture = check_architecture(self.architecture)
        for name in ("d_in", "d_sae", "expansion_factor", "aux_k"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InvalidInput(name, f"must be > 0, got {value}", "use a positive whole number")
        _at_most(self, "expansion_factor", MAX_EXPANSION, "use 4-64 (d_sae = expansion_factor x d_in)")
        _at_most(self, "d_sae", MAX_D_SAE, "use a dictionary of at most a few million latents")
        _at_most(self, "d_in", MAX_D_SAE, "d_in is the model's hidden size (give the hook point instead)")
        if self.d_sae is None:
            if self.expansion_factor is None:
                self.expansion_factor = _profile().expansion_factor
            if self.d_in is not None:
                self.d_sae = self.expansion_factor * self.d_in
                _at_most(self, "d_sae", MAX_D_SAE, "lower expansion_factor")
        elif self.expansion_factor is not None and self.d_in is not None:
            if self.d_sae != self.expansion_factor * self.d_in:
                raise InvalidInput(
                    "d_sae",
                    f"d_sae={self.d_sae} disagrees with expansion_factor={self.expansion_factor} * d_in={self.d_in}",
                    "give d_sae or expansion_factor, not both",
                )
        self._fill_architecture_fields(get(architecture))
        if self.k is not None:
            if self.k <= 0:
                raise InvalidInput("k", f"must be > 0, got {self.k}", "use the number of latents active per token, e.g. 32")
            if self.d_sae is not None and self.k > self.d_sae:
                raise InvalidInput("k", f"k={self.k} is larger than d_sae={self.d_sae}", "use k <= d_sae (k << d_sae)")
            _at_most(self, "k", MAX_D_SAE, "use the number of latents active per token, e.g. 32")
        if self.aux_k is not None and self.d_sae is not None and self.aux_k > self.d_sae:
            raise InvalidInput("aux_k", f"aux_k={self.aux_k} is larger than d_sae={self.d_sae}", "use aux_k <= d_sae")
        for name in ("l1_coefficient", "l0_coefficient", "jumprelu_bandwidth", "batchtopk_threshold_lr"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InvalidInput(name, f"must be a positive number, got {value}", "use a value > 0")
        for name in ("aux_k_coefficient", "jumprelu_init_threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InvalidInput(name, f"must be >= 0, got {value}", "use 0 or a positive number")
        if self.batchtopk_threshold_lr > 1:
            raise InvalidInput("batchtopk_threshold_lr", "must be <= 1", "use a small rate such as 0.01")
        return self

    def _fill_architecture_fields(self, architecture) -> None:
        """Refuse a field only other architectures read; fill this one's defaults (from the registry).

        Only fields that default to None can be told apart from "not given" (a dumped config
        carries every default), so those are the ones refused.
        """
        for name in sorted(_architecture_fields() - architecture.fields):
            if getattr(self, name) is not None and type(self).model_fields[name].default is None:
                users = " or ".join(a.name for a in built_in() if name in a.fields)
                raise InvalidInput(name, f"only applies to {users}, not architecture {self.architecture!r}",
                                   f"remove {name} or change architecture")
        for name in architecture.fields:
            if getattr(self, name) is None:
                setattr(self, name, architecture.default(name, _profile))
        if architecture.sparsity_field is not None and getattr(self, architecture.sparsity_field) is None:
            raise InvalidInput(architecture.sparsity_field, f"architecture {architecture.name!r} needs it (it has no default)",
                               f"give {architecture.sparsity_field}, e.g. 1.0")

    def with_d_in(self, d_in: int):
        """This config with the activation width filled in (and d_sae resolved, k re-checked)."""
        if self.d_in is not None and self.d_in != d_in:
            raise InvalidInput(
                "d_in", f"config says d_in={self.d_in} but the activations have width {d_in}", "fix d_in or the hook point"
            )
        data = self.model_dump()
        data["d_in"] = d_in
        return type(self).model_validate(data)


class TrainingConfig(SAEConfig):
    """Everything a training run needs. `model_dump(mode="json")` round-trips."""

    model: str | None = Field(None, description="a Hugging Face id or local path; None: the bundled default model")
    hook_point: str = Field(..., description="where activations are read, e.g. 'blocks.3.hook_resid_post'")
    dataset: str | None = Field(None, description="corpus name or path; None: the bundled offline corpus")
    lr: float | None = Field(
        None, description=f"Adam learning rate (> 0); None: the architecture's: TopK and BatchTopK "
                          f"{K_SPARSE_RECIPE.lr:g} * sqrt({LR_REF_WIDTH} / d_sae), d_sae counted as at least "
                          f"{LR_MIN_WIDTH} ({default_lr(3072):.2g} at 3072 latents); ReLU, JumpReLU {PENALTY_RECIPE.lr:g}"
    )
    # None: the architecture's recipe (sae/registry.py): (0.8, 0.99) for TopK and BatchTopK, whose
    # latents only get a gradient on the steps they fire; (0.9, 0.999) for ReLU and JumpReLU.
    adam_beta1: float | None = Field(None, description="Adam beta1, in [0, 1); None: the architecture's")
    adam_beta2: float | None = Field(None, description="Adam beta2, in [0, 1); None: the architecture's")
    # At a TopK lr of 6.5e-3 a 20% warmup cut the dead latents of a 150-step run 10x (2.7% -> 0.3%)
    # for the same held-out FVU (benchmarks/bench_recipe.py); 1000 steps are plenty for long runs.
    lr_warmup_steps: int | None = Field(None, description="linear LR warmup steps (default 20% of steps, <= 1000)")
    lr_decay_steps: int | None = Field(None, description="linear LR decay to 0 over the last N steps")
    # Decaying to 0 over the whole run after warmup beat the last 20% by 16% in held-out FVU at 150
    # steps (benchmarks/bench_recipe.py), as Bergsma et al. 2025 ("straight to zero") find for LMs.
    lr_decay_fraction: float = Field(
        1.0, description="decay over this fraction of steps when lr_decay_steps is None (at most all after warmup)"
    )
    sparsity_warmup_steps: int | None = Field(
        None, description="linear warmup of the sparsity coefficient (default: the architecture's share of "
                          "steps, at most 1000)"
    )
    encoder_init_scale: float | None = Field(
        None, description="W_enc starts as this times W_dec^T (> 0); None: the architecture's"
    )
    batch_size: int = Field(default_factory=lambda: _profile().batch_size, description="tokens per step (> 0)")
    total_tokens: int | None = Field(None, description="training tokens (profile default); or give steps")
    steps: int | None = Field(None, description="training steps; or give total_tokens")
    seed: int = Field(42, description="random seed (init and RNG state)")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    autocast: bool | None = Field(None, description="bf16 autocast; None: on for CUDA, off elsewhere")
    checkpoint_every: int = Field(
        default_factory=lambda: _profile().checkpoint_every, description="steps between checkpoints (> 0)"
    )
    keep_checkpoints: int = Field(2, description="how many recent checkpoints to keep (>= 1)")
    log_every: int = Field(default_factory=lambda: _profile().log_every, description="steps between metric logs (> 0)")
    eval_every: int | None = Field(None, description="steps between CE-loss evaluations (default: checkpoint_every)")
    dead_window_tokens: int | None = Field(
        None, description="a latent silent for this many tokens is dead (default min(10M, total/4))"
    )

    @model_validator(mode="after")
    def _check_training(self):
        parse_hook_point(self.hook_point)  # raises InvalidInput naming the valid forms
        if self.lr is None:
            self.lr = default_lr(self.d_sae, self.architecture)  # None: filled by with_d_in, once the width is known
        recipe = get(self.architecture).recipe
        betas = recipe.adam_betas
        if self.encoder_init_scale is None:
            self.encoder_init_scale = recipe.encoder_init_scale
        if not (math.isfinite(self.encoder_init_scale) and self.encoder_init_scale > 0):
            raise InvalidInput("encoder_init_scale", f"must be a positive number, got {self.encoder_init_scale}",
                               "use e.g. 0.1, or leave it out")
        if self.adam_beta1 is None:
            self.adam_beta1 = betas[0]
        if self.adam_beta2 is None:
            self.adam_beta2 = betas[1]
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise InvalidInput("lr", f"must be a positive number, got {self.lr}", "use e.g. 1e-3, or leave it out")
        if self.lr is not None and self.lr > MAX_LR:
            raise InvalidInput("lr", f"{self.lr:g} is too large for Adam (at most {MAX_LR:g}; SAEs train at 1e-5..1e-2)",
                               "use e.g. 1e-3, or leave it out")
        if not 0 <= self.seed <= MAX_SEED:
            raise InvalidInput("seed", f"must be in 0..{MAX_SEED}, got {preview(self.seed)}", "use e.g. seed=42")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise InvalidInput(name, f"must be in [0, 1), got {getattr(self, name)}", "use e.g. 0.9 / 0.999")
        for name in ("batch_size", "checkpoint_every", "log_every", "keep_checkpoints"):
            if getattr(self, name) <= 0:
                raise InvalidInput(name, f"must be > 0, got {getattr(self, name)}", "use a positive whole number")
        _at_most(self, "batch_size", MAX_BATCH, "use a few thousand tokens per step, e.g. 4096")
        if self.total_tokens is not None and self.total_tokens > MAX_STEPS * self.batch_size:
            raise InvalidInput("total_tokens", f"{self.total_tokens:,} tokens are more than {MAX_STEPS:,} steps of "
                                               f"{self.batch_size:,}", "train on fewer tokens, or split the run")
        if self.total_tokens is not None and self.steps is not None:
            if self.total_tokens != self.steps * self.batch_size:
                raise InvalidInput("steps", "give total_tokens or steps, not both", "remove one of them")
        if self.steps is None:
            if self.total_tokens is None:
                self.total_tokens = _profile().train_tokens
            if self.total_tokens <= 0:
                raise InvalidInput("total_tokens", f"must be > 0, got {self.total_tokens}", "use a positive token count")
            self.steps = math.ceil(self.total_tokens / self.batch_size)
        if self.steps <= 0:
            raise InvalidInput("steps", f"must be > 0, got {self.steps}", "use a positive number of steps")
        _at_most(self, "steps", MAX_STEPS, "train for fewer steps, or split the run")
        self.total_tokens = self.steps * self.batch_size
        if self.lr_warmup_steps is None:
            self.lr_warmup_steps = min(1000, self.steps // 5)
        if self.sparsity_warmup_steps is None:
            self.sparsity_warmup_steps = min(1000, int(recipe.sparsity_warmup_fraction * self.steps))
        if not 0 <= self.lr_decay_fraction <= 1:
            raise InvalidInput("lr_decay_fraction", f"must be in [0, 1], got {self.lr_decay_fraction}", "use e.g. 0.2")
        if self.lr_decay_steps is None:
            self.lr_decay_steps = min(int(self.lr_decay_fraction * self.steps), max(0, self.steps - self.lr_warmup_steps))
        for name in ("lr_warmup_steps", "lr_decay_steps", "sparsity_warmup_steps"):
            if getattr(self, name) < 0:
                raise InvalidInput(name, f"must be >= 0, got {getattr(self, name)}", "use 0 or more steps")
        if self.lr_warmup_steps + self.lr_decay_steps > self.steps:
            raise InvalidInput(
                "lr_decay_steps",
                f"lr_warmup_steps ({self.lr_warmup_steps}) + lr_decay_steps ({self.lr_decay_steps}) exceed steps ({self.steps})",
                "shorten the warmup/decay or train longer",
            )
        if self.eval_every is None:
            self.eval_every = self.checkpoint_every
        if self.eval_every < 0:
            raise InvalidInput("eval_every", f"must be >= 0, got {self.eval_every}", "use 0 to disable, or a step count")
        if self.dead_window_tokens is None:
            self.dead_window_tokens = min(10_000_000, max(self.batch_size, self.total_tokens // 4))
        if self.dead_window_tokens <= 0:
            raise InvalidInput("dead_window_tokens", f"must be > 0, got {self.dead_window_tokens}", "use e.g. 1_000_000")
        if not _DEVICE.fullmatch(self.device):
            raise InvalidInput("device", f"unknown device {preview(self.device)}",
                               "use 'auto', 'cpu', 'cuda', 'cuda:0' or 'mps'")
        return self


def _architecture_fields() -> frozenset[str]:
    """Config fields some built-in architecture reads: the others may not be given for it.

    Built-in only: a plugin reads existing fields (it adds none), and validating a config must
    not import every installed plugin's module (and torch with it).
    """
    return frozenset().union(*(a.fields for a in built_in()))


def _at_most(cfg, name: str, limit: int, fix: str) -> None:
    value = getattr(cfg, name)
    if value is not None and value > limit:
        raise InvalidInput(name, f"{value:,} is more than the most miStudio trains ({limit:,})", fix)


# [batch, width] float buffers a training step holds at the least: the input and its reconstruction
# ([batch, d_in] each), the pre-activations and their gradient ([batch, d_sae] each). Measured peaks
# are higher (TopK ~5, ReLU ~6.5, JumpReLU ~10 [batch, d_sae] copies at 384x3072, batch 4096), so
# a config refused here could never have fit.
_STEP_COPIES = 2
# Weights, their gradients and Adam's two moments.
_PARAM_COPIES = 4


def training_memory(cfg: TrainingConfig) -> dict:
    """What training `cfg` holds at the least, in bytes: {"parameters", "step", "total"} (d_in, d_sae known)."""
    width = 8 if cfg.dtype == "float64" else 4
    n_params = 2 * cfg.d_in * cfg.d_sae + cfg.d_sae + cfg.d_in  # W_enc, W_dec, b_enc, b_dec
    parameters = _PARAM_COPIES * n_params * width
    step = _STEP_COPIES * cfg.batch_size * (cfg.d_in + cfg.d_sae) * width
    return {"parameters": parameters, "step": step, "total": parameters + step}


def check_memory(cfg: TrainingConfig, budget: int) -> None:
    """InvalidInput, with the numbers, when training cfg cannot fit MISTUDIO_MEMORY_BUDGET."""
    need = training_memory(cfg)
    if need["total"] <= budget:
        return
    field = "batch_size" if need["step"] > need["parameters"] else ("d_sae" if cfg.expansion_factor is None
                                                                      else "expansion_factor")
    raise InvalidInput(
        field,
        f"an SAE of {cfg.d_in:,} x {cfg.d_sae:,} with batch_size {cfg.batch_size:,} needs at least "
        f"{_size(need['total'])} (parameters, gradients and Adam state {_size(need['parameters'])}, one step's "
        f"activations {_size(need['step'])}), more than MISTUDIO_MEMORY_BUDGET = {_size(budget)}",
        "lower expansion_factor / d_sae or batch_size, or raise MISTUDIO_MEMORY_BUDGET (bytes) if this device "
        "has the memory",
    )


def _size(n: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n / 2**10:,.1f} KiB"
