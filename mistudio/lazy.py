"""Lazy package exports: `import mistudio.models` stays cheap until a name is used
(transformers and torch take seconds to import)."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """A module __getattr__ that imports `name` from `package.<exports[name]>` on first use."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__
