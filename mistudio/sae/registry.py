"""Architecture name -> everything miStudio knows about it. The one place that lists what can be trained.

Each architecture is an `Architecture` record (torch-free facts: which config fields it reads and
their defaults, its sparsity coefficient, its SAELens name, its docs line) naming its SAE class
(`mistudio/sae/<architecture>.py`: the model, its dead-latent mask, its SAELens tensors). The
config, the trainer, the export, the CLI's choices and the docs all read these; none of them
names an architecture.

The records are torch-free because a config is validated (before it is queued) without
importing torch; the class is imported when first needed. A new architecture is one module:
define the SAE class and an `Architecture` record in it, and either call `register(record)` or
name the record in a `mistudio.architectures` entry point (`toy = my_package.toy_sae:ARCHITECTURE`),
which makes it a choice for config validation, `mistudio train --architecture` and `load_sae`
(the entry point's module is imported only when its name is used).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Mapping

from mistudio.errors import InvalidInput
from mistudio.validation import preview

ENTRY_POINT_GROUP = "mistudio.architectures"


@dataclass(frozen=True)
class Recipe:
    """The training defaults that depend on the architecture (a config that gives them keeps its own)."""

    lr: float  # Adam's lr: at 16,384 latents when width_scaled, else at every width
    width_scaled: bool  # lr * sqrt(16384 / d_sae), d_sae counted as at least 1024 (sae/config.default_lr)
    adam_betas: tuple[float, float]
    encoder_init_scale: float = 1.0  # W_enc starts as this times W_dec^T (decoder rows unit-norm)
    sparsity_warmup_fraction: float = 0.05  # the penalty's linear warmup, as a fraction of steps (<= 1000)


# TopK-style (k latents by construction): chosen on held-out activations with
# benchmarks/bench_recipe.py, README "The training recipe". A TopK latent has a gradient only on
# the steps it fires; the shorter Adam memories let the higher lr train without killing latents.
K_SPARSE_RECIPE = Recipe(lr=3.9e-3, width_scaled=True, adam_betas=(0.8, 0.99))
# Penalty-trained (L1, L0) and plugins: chosen on held-out activations (README "The training
# recipe"). The small encoder keeps the first reconstructions near the input's scale instead of
# several times it; the long penalty warmup lets latents find their inputs before the penalty can
# push them below zero for good (a ReLU latent that never fires gets no gradient again).
PENALTY_RECIPE = Recipe(lr=5e-3, width_scaled=False, adam_betas=(0.9, 0.999), encoder_init_scale=0.1,
                        sparsity_warmup_fraction=0.5)


@dataclass(frozen=True)
class Architecture:
    """What the config, trainer, export and CLI need to know about one SAE architecture."""

    name: str  # the `architecture` config value (and the SAE class's `architecture` attribute)
    sae_class: str | type  # "module:Class" (imported on first use: it imports torch) or the class itself
    doc: str  # one line, for `mistudio train --help` and the docs
    saelens_name: str  # the cfg.json "architecture" SAELens' loader expects
    # SAE constructor argument -> the config field it is built from.
    params: Mapping[str, str] = field(default_factory=dict)
    # Config field -> its value when the user leaves it None; a callable gets the machine profile.
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # The config field weighting the sparsity penalty (warmed up by sparsity_warmup_steps), if any.
    sparsity_field: str | None = None
    # L0 is fixed by construction (k): the training curves show the AuxK loss in its place.
    fixed_l0: bool = False
    recipe: Recipe = PENALTY_RECIPE  # lr and Adam betas when the config leaves them out

    @property
    def fields(self) -> frozenset[str]:
        """The config fields this architecture reads (a field no architecture reads is shared)."""
        return frozenset(self.params.values()) | frozenset(self.defaults) | {self.sparsity_field} - {None}

    def load(self) -> type:
        """The SAE class (a SparseAutoencoder subclass); imports its module."""
        cls = self.sae_class
        if isinstance(cls, str):
            module, _, name = cls.partition(":")
            cls = getattr(importlib.import_module(module), name)
        if getattr(cls, "architecture", None) != self.name:
            raise TypeError(f"{cls.__qualname__}.architecture must be {self.name!r}, the name it is registered under")
        return cls

    def sae_kwargs(self, config) -> dict:
        """The SAE constructor's architecture arguments, read from a config."""
        return {arg: getattr(config, name) for arg, name in self.params.items()}

    def default(self, name: str, profile: Callable[[], Any]):
        """This architecture's value for config field `name` when it is left None (None: no default)."""
        value = self.defaults.get(name)
        return value(profile()) if callable(value) else value


_TOPK_PARAMS = {"k": "k", "aux_k": "aux_k", "aux_k_coefficient": "aux_k_coefficient", "sparse_kernels": "sparse_kernels"}

_BUILT_IN = (
    Architecture(
        "relu", "mistudio.sae.relu:ReluSAE", "ReLU with a decoder-norm-weighted L1 penalty (SAELens 'standard')",
        saelens_name="standard", defaults={"l1_coefficient": 5.0}, sparsity_field="l1_coefficient",
    ),
    Architecture(
        "topk", "mistudio.sae.topk:TopKSAE", "the k largest latents per token, an AuxK loss for dead ones",
        saelens_name="topk", params=_TOPK_PARAMS, defaults={"k": lambda profile: profile.topk_k}, fixed_l0=True,
        recipe=K_SPARSE_RECIPE,
    ),
    Architecture(
        "batchtopk", "mistudio.sae.batchtopk:BatchTopKSAE",
        "k x batch latents across the batch; a global threshold at inference (exported as JumpReLU)",
        saelens_name="jumprelu", params={**_TOPK_PARAMS, "threshold_lr": "batchtopk_threshold_lr"},
        defaults={"k": lambda profile: profile.topk_k}, fixed_l0=True, recipe=K_SPARSE_RECIPE,
    ),
    Architecture(
        "jumprelu", "mistudio.sae.jumprelu:JumpReluSAE", "per-latent learned thresholds, trained with an L0 penalty",
        saelens_name="jumprelu", params={"bandwidth": "jumprelu_bandwidth", "init_threshold": "jumprelu_init_threshold"},
        defaults={"l0_coefficient": 1.0}, sparsity_field="l0_coefficient",
    ),
)
_registered: dict[str, Architecture] = {}


def register(architecture: Architecture) -> Architecture:
    """Add an architecture for this process (an entry point adds it for every process)."""
    if architecture.name in _all():
        raise ValueError(f"architecture {architecture.name!r} is already registered")
    _registered[architecture.name] = architecture
    return architecture


@lru_cache(maxsize=8)
def _entry_points(path: tuple[str, ...]) -> dict[str, importlib.metadata.EntryPoint]:
    # Keyed by sys.path: a folder added to it (a plugin installed at run time) is seen.
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _plugins() -> dict[str, importlib.metadata.EntryPoint]:
    return _entry_points(tuple(sys.path))


def _all() -> dict:
    """name -> Architecture (built-in and registered) or EntryPoint (not loaded yet: loading imports its module).

    Built-in names come first and cannot be taken over by a plugin of the same name.
    """
    found: dict = {a.name: a for a in _BUILT_IN}
    for name, entry in {**_plugins(), **_registered}.items():
        found.setdefault(name, entry)
    return found


def names() -> tuple[str, ...]:
    """Every architecture name, built-in ones first; imports nothing."""
    return tuple(_all())


def check_architecture(name) -> str:
    """The name, if it is an architecture (InvalidInput naming the choices otherwise); no torch."""
    if not isinstance(name, str) or name not in _all():
        raise InvalidInput("architecture", f"unknown architecture {preview(name)}", f"use one of {', '.join(names())}")
    return name


def get(name: str) -> Architecture:
    """The Architecture record of a name (an entry point's is loaded here)."""
    found = _all()[check_architecture(name)]
    if isinstance(found, importlib.metadata.EntryPoint):
        found = found.load()
        if not isinstance(found, Architecture) or found.name != name:
            raise TypeError(f"entry point {name!r} in {ENTRY_POINT_GROUP} must name an Architecture called {name!r}")
    return found


def architectures() -> tuple[Architecture, ...]:
    """Every record, plugins' included (loading an entry point imports its module)."""
    return tuple(get(name) for name in names())


def built_in() -> tuple[Architecture, ...]:
    """The records miStudio ships: known without importing any plugin (or torch)."""
    return _BUILT_IN


def get_architecture(name: str):
    """The SAE class of an architecture name (a SparseAutoencoder subclass)."""
    return get(name).load()


def from_saelens_name(saelens_name: str) -> Architecture:
    """The architecture an export of SAELens type `saelens_name` without our metadata loads as."""
    matches = [a for a in architectures() if a.saelens_name == saelens_name]
    if not matches:
        raise InvalidInput("architecture", f"SAELens architecture {preview(saelens_name)} is not one miStudio loads",
                           f"use an export of type {', '.join(sorted({a.saelens_name for a in architectures()}))}")
    return next((a for a in matches if a.name == saelens_name), matches[0])


def __getattr__(attr: str):
    if attr == "ARCHITECTURES":  # {name: class}, as before: imports the classes (and torch)
        return {name: get_architecture(name) for name in names()}
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
