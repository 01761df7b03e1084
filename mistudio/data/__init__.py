"""Data: corpora, tokenization and packing, processed datasets, hub downloads, activations.

No Redis in here: long operations take a `progress(dict)` callback instead.
Names are imported lazily so `import mistudio.data` stays cheap.
"""

from __future__ import annotations

from mistudio.lazy import lazy_exports

_EXPORTS = {
    "iter_documents": "corpora",
    "stdlib_documents": "corpora",
    "PackedTokens": "packing",
    "pack_documents": "packing",
    "ProcessedDataset": "processed",
    "process_dataset": "processed",
    "download_dataset": "download",
    "ActivationCache": "activations",
    "ActivationStore": "activations",
    "build_activation_cache": "activations",
    "build_activation_caches": "activations",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
