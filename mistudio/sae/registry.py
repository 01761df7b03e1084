"""Architecture name -> SAE class. The one place that lists what can be trained."""

from __future__ import annotations

from mistudio.errors import InvalidInput
from mistudio.sae.base import SparseAutoencoder
from mistudio.sae.batchtopk import BatchTopKSAE
from mistudio.sae.jumprelu import JumpReluSAE
from mistudio.sae.relu import ReluSAE
from mistudio.sae.topk import TopKSAE

ARCHITECTURES: dict[str, type[SparseAutoencoder]] = {
    cls.architecture: cls for cls in (ReluSAE, TopKSAE, BatchTopKSAE, JumpReluSAE)
}


def get_architecture(name: str) -> type[SparseAutoencoder]:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise InvalidInput(
            "architecture", f"unknown architecture {name!r}", f"use one of {', '.join(ARCHITECTURES)}"
        ) from None
