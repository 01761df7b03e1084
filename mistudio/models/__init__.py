"""Models: loading (transformers), metadata, hub downloads, and hook points.

No Redis in here: long operations take a `progress(dict)` callback instead.
Names are imported lazily so `import mistudio.models` stays cheap (transformers takes seconds).
"""

from __future__ import annotations

from mistudio.lazy import lazy_exports

_EXPORTS = {
    "LoadedModel": "loading",
    "load_model": "loading",
    "resolve_model_path": "folders",
    "inspect_model": "folders",
    "bundled_model_path": "folders",
    "reference_model_path": "folders",
    "REFERENCE_NAME": "folders",
    "ReferenceConfig": "reference_config",
    "reference_card": "reference_config",
    "model_metadata": "metadata",
    "download_model": "download",
    "HubUnavailable": "download",
    "list_hook_points": "hooks",
    "validate_hook_point": "hooks",
    "capture_activations": "hooks",
    "patch_activation": "hooks",
    "parse_hook_point": "hooks",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
