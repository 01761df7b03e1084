"""Architecture name -> SAE class. The one place that lists what can be trained.

The names are known without importing torch (config validation before queueing uses them);
the classes are imported when first asked for.
"""

from __future__ import annotations

import importlib

from mistudio.errors import InvalidInput
from mistudio.validation import preview

# name -> (module in mistudio.sae, class)
_CLASSES = {
    "relu": ("relu", "ReluSAE"),
    "topk": ("topk", "TopKSAE"),
    "batchtopk": ("batchtopk", "BatchTopKSAE"),
    "jumprelu": ("jumprelu", "JumpReluSAE"),
}
ARCHITECTURE_NAMES = tuple(_CLASSES)


def check_architecture(name) -> str:
    """The name, if it is an architecture (InvalidInput naming the choices otherwise); no torch."""
    if not isinstance(name, str) or name not in _CLASSES:
        raise InvalidInput(
            "architecture", f"unknown architecture {preview(name)}", f"use one of {', '.join(ARCHITECTURE_NAMES)}"
        )
    return name


def get_architecture(name: str):
    """The SAE class of an architecture name (a SparseAutoencoder subclass)."""
    module, cls = _CLASSES[check_architecture(name)]
    return getattr(importlib.import_module(f"mistudio.sae.{module}"), cls)


def __getattr__(attr: str):
    if attr == "ARCHITECTURES":  # {name: class}, as before: imports the classes (and torch)
        return {name: get_architecture(name) for name in ARCHITECTURE_NAMES}
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
