"""Hook-point names and the architecture table, without torch: what validation before queueing needs.

`mistudio.models.hooks` (which imports torch) re-exports all of this and does the hooking itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mistudio.errors import InvalidInput
from mistudio.validation import preview

# Execution order inside a block: the order hooks fire in, used to stop the forward pass early.
HOOK_KINDS = ("resid_pre", "attn_out", "mlp_out", "resid_post")
_NAME = re.compile(r"blocks\.(\d+)\.hook_(resid_pre|attn_out|mlp_out|resid_post)")


@dataclass(frozen=True)
class Layout:
    """Where an architecture keeps its blocks and sub-layers (dotted attribute paths)."""

    blocks: str  # from the base model (model.base_model) to the nn.ModuleList of blocks
    attn: str  # inside a block: the module whose output is the attention contribution
    mlp: str  # inside a block: the module whose output is the MLP contribution
    causal: bool  # decoder (causal LM) or bidirectional encoder


_LLAMA_LIKE = Layout(blocks="layers", attn="self_attn", mlp="mlp", causal=True)
_BERT_LIKE = Layout(blocks="encoder.layer", attn="attention.output.dense", mlp="output.dense", causal=False)

# Keyed by config.model_type. Every entry is exercised by tests/test_models_hooks.py.
LAYOUTS: dict[str, Layout] = {
    "gpt2": Layout(blocks="h", attn="attn", mlp="mlp", causal=True),
    "gpt_neox": Layout(blocks="layers", attn="attention", mlp="mlp", causal=True),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
}


@dataclass(frozen=True)
class HookPoint:
    name: str
    layer: int
    kind: str  # one of HOOK_KINDS

    @property
    def order(self) -> tuple[int, int]:
        return (self.layer, HOOK_KINDS.index(self.kind))


def hook_point_names(n_layers: int) -> list[str]:
    """All hook point names for a model with `n_layers` blocks, in execution order."""
    return [f"blocks.{layer}.hook_{kind}" for layer in range(n_layers) for kind in HOOK_KINDS]


def parse_hook_point(name: str) -> HookPoint:
    match = _NAME.fullmatch(name) if isinstance(name, str) else None
    if not match:
        raise InvalidInput(
            "hook_point",
            f"{preview(name)} is not a hook point name",
            "use blocks.{L}.hook_resid_pre, blocks.{L}.hook_resid_post, blocks.{L}.hook_attn_out or "
            "blocks.{L}.hook_mlp_out, e.g. blocks.3.hook_resid_post",
        )
    return HookPoint(name, int(match.group(1)), match.group(2))


def layout_for(model_type: str | None) -> Layout:
    try:
        return LAYOUTS[model_type]  # type: ignore[index]
    except (KeyError, TypeError):  # TypeError: a config.json whose model_type is not a string
        raise InvalidInput(
            "model",
            f"architecture {preview(model_type)} has no hook-point mapping",
            f"use a model of type {', '.join(sorted(LAYOUTS))}, or add a Layout to mistudio/models/hook_names.py",
        ) from None


def _describe_choices(valid: list[str]) -> str:
    if len(valid) <= 24:
        return "use one of " + ", ".join(valid)
    n_layers = len(valid) // len(HOOK_KINDS)
    return (
        f"use blocks.{{L}}.hook_{{{'|'.join(HOOK_KINDS)}}} with L in 0..{n_layers - 1}, "
        f"e.g. blocks.{n_layers // 2}.hook_resid_post"
    )


def validate_hook_point_in(metadata: dict, hook_point: str) -> None:
    """Raise InvalidInput unless `hook_point` exists in a model described by `model_metadata()` /
    `plain_metadata()` (a dict): the check made before queueing, without loading the model."""
    valid = list(metadata.get("hook_points") or [])
    arch = metadata.get("model_type") or metadata.get("architecture")
    if not valid:
        layout_for(arch)  # raises the "unsupported architecture" error
    if hook_point not in valid:
        raise InvalidInput(
            "hook_point",
            f"{preview(hook_point)} is not a hook point of this {arch} model ({len(valid) // len(HOOK_KINDS)} layers)",
            _describe_choices(valid),
        )
