"""Model metadata: what the UI, the job validator and the Redis cache need to know about a model.

Everything comes from the transformers config, so it can be computed (and hook points validated)
without loading weights. The result is plain JSON: it is cached in Redis for 24 h.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mistudio.models.folders import config_has_lm_head
from mistudio.models.hooks import LAYOUTS, _unwrap, hook_point_names

def _count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() skips tied duplicates


def _params_from_config(config: Any, has_lm_head: bool) -> int | None:
    # Building the model on the meta device allocates no memory and gives the exact count.
    from transformers import AutoModel, AutoModelForCausalLM

    cls = AutoModelForCausalLM if has_lm_head else AutoModel
    try:
        with torch.device("meta"):
            return _count_params(cls.from_config(config))
    except Exception:  # an exotic config transformers cannot build: leave the count unknown
        return None


def stored_dtype(config: Any) -> Any:
    """The dtype a checkpoint was saved in, if its config says."""
    # Read the attribute directly: transformers 5 warns on `config.torch_dtype`, older versions lack `dtype`.
    return vars(config).get("dtype") or vars(config).get("torch_dtype")


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.") if dtype is not None else "float32"


def model_metadata(config_or_model: Any) -> dict:
    """Architecture facts from a transformers config, model or LoadedModel, as a JSON-ready dict."""
    obj = _unwrap(config_or_model)
    model = obj if isinstance(obj, nn.Module) else None
    config = model.config if model is not None else obj
    model_type = getattr(config, "model_type", None)
    archs = list(getattr(config, "architectures", None) or [])
    if model is not None:
        architecture = type(model).__name__
        has_lm_head = model.get_output_embeddings() is not None
        n_params = _count_params(model)
        dtype = _dtype_name(next(model.parameters()).dtype)
    else:
        architecture = archs[0] if archs else model_type
        has_lm_head = config_has_lm_head(config)
        n_params = _params_from_config(config, has_lm_head)
        dtype = _dtype_name(stored_dtype(config))
    d_model = int(config.hidden_size)
    n_layers = int(config.num_hidden_layers)
    # GPT-2 calls the MLP width n_inner and leaves it None for the usual 4 * d_model.
    d_mlp = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d_model
    max_positions = getattr(config, "max_position_embeddings", None)
    supported = model_type in LAYOUTS
    return {
        "architecture": architecture,
        "model_type": model_type,
        "name_or_path": getattr(config, "_name_or_path", "") or "",
        "n_layers": n_layers,
        "d_model": d_model,
        "d_mlp": int(d_mlp),
        "n_heads": int(getattr(config, "num_attention_heads", 0) or 0),
        "vocab_size": int(config.vocab_size),
        "n_params": n_params,
        "dtype": dtype,
        "has_lm_head": bool(has_lm_head),
        "is_causal": bool(LAYOUTS[model_type].causal) if supported else bool(has_lm_head),
        "max_position_embeddings": int(max_positions) if max_positions else None,
        "max_context": int(max_positions) if max_positions else None,
        "hooks_supported": supported,
        "hook_points": hook_point_names(n_layers) if supported else [],
    }
