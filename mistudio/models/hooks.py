"""Hook points: one naming scheme for every architecture, read and patched with forward hooks.

Names follow TransformerLens / SAELens, so SAEs trained here line up with that ecosystem:

    blocks.{L}.hook_resid_pre    residual stream entering block L (L=0: the embedding output)
    blocks.{L}.hook_attn_out     the attention sub-layer's output (what it adds to the residual stream)
    blocks.{L}.hook_mlp_out      the MLP sub-layer's output
    blocks.{L}.hook_resid_post   residual stream leaving block L

Each architecture maps these names onto its own modules with a three-field `Layout`. Adding an
architecture is one line in `LAYOUTS` (and a test with a tiny random config).

BERT-style encoders are post-LayerNorm: their residual stream is the block's *normalised* output,
and attn_out / mlp_out are the sub-layers' dense outputs before the residual add and LayerNorm.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mistudio.errors import InvalidInput

# Execution order inside a block: the order hooks fire in, used to stop the forward pass early.
HOOK_KINDS = ("resid_pre", "attn_out", "mlp_out", "resid_post")
_NAME = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|attn_out|mlp_out|resid_post)$")


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
    match = _NAME.match(name) if isinstance(name, str) else None
    if not match:
        raise InvalidInput(
            "hook_point",
            f"{name!r} is not a hook point name",
            "use blocks.{L}.hook_resid_pre, blocks.{L}.hook_resid_post, blocks.{L}.hook_attn_out or "
            "blocks.{L}.hook_mlp_out, e.g. blocks.3.hook_resid_post",
        )
    return HookPoint(name, int(match.group(1)), match.group(2))


def _unwrap(model: Any) -> Any:
    """Accept a LoadedModel (anything with `.model`) where a model is expected."""
    inner = getattr(model, "model", None)
    if not isinstance(model, nn.Module) and isinstance(inner, nn.Module):
        return inner
    return model


def layout_for(model_type: str | None) -> Layout:
    try:
        return LAYOUTS[model_type]  # type: ignore[index]
    except KeyError:
        raise InvalidInput(
            "model",
            f"architecture {model_type!r} has no hook-point mapping",
            f"use a model of type {', '.join(sorted(LAYOUTS))}, or add a Layout to mistudio/models/hooks.py",
        ) from None


def list_hook_points(model: Any) -> list[str]:
    """The hook points of a model, LoadedModel or transformers config, in execution order."""
    model = _unwrap(model)
    config = getattr(model, "config", model)
    layout_for(getattr(config, "model_type", None))
    return hook_point_names(int(config.num_hidden_layers))


def _describe_choices(valid: list[str]) -> str:
    if len(valid) <= 24:
        return "use one of " + ", ".join(valid)
    n_layers = len(valid) // len(HOOK_KINDS)
    return (
        f"use blocks.{{L}}.hook_{{{'|'.join(HOOK_KINDS)}}} with L in 0..{n_layers - 1}, "
        f"e.g. blocks.{n_layers // 2}.hook_resid_post"
    )


def validate_hook_point(model_or_metadata: Any, hook_point: str) -> None:
    """Raise InvalidInput unless `hook_point` exists. Works from `model_metadata()` alone (before queueing)."""
    if isinstance(model_or_metadata, dict):
        valid = list(model_or_metadata.get("hook_points") or [])
        arch = model_or_metadata.get("model_type") or model_or_metadata.get("architecture")
        if not valid:
            layout_for(arch)  # raises the "unsupported architecture" error
    else:
        valid = list_hook_points(model_or_metadata)
        config = getattr(_unwrap(model_or_metadata), "config", model_or_metadata)
        arch = getattr(config, "model_type", None)
    if hook_point not in valid:
        raise InvalidInput(
            "hook_point",
            f"{hook_point!r} is not a hook point of this {arch} model ({len(valid) // len(HOOK_KINDS)} layers)",
            _describe_choices(valid),
        )


def _get(module: nn.Module, dotted: str) -> nn.Module:
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def _target(model: nn.Module, point: HookPoint) -> tuple[nn.Module, str]:
    """The module to hook and how: 'pre' (its input) or 'out' (its output)."""
    validate_hook_point(model, point.name)
    layout = layout_for(model.config.model_type)
    base = getattr(model, "base_model", model)
    try:
        block = _get(base, layout.blocks)[point.layer]
        if point.kind == "resid_pre":
            return block, "pre"
        if point.kind == "resid_post":
            return block, "out"
        return _get(block, layout.attn if point.kind == "attn_out" else layout.mlp), "out"
    except (AttributeError, IndexError) as exc:
        raise InvalidInput(
            "model",
            f"{type(model).__name__} does not have the module layout expected for {model.config.model_type!r} ({exc})",
            "update the Layout for this architecture in mistudio/models/hooks.py",
        ) from None


def _first(output: Any) -> torch.Tensor:
    # Blocks and attention modules return a tensor or a tuple whose first item is the hidden state.
    return output[0] if isinstance(output, tuple) else output


def _pre_input(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


class _StopForward(Exception):
    """Raised from the deepest hook so the rest of the model (and the LM head) never runs."""


_ACCEPTS_USE_CACHE: dict[type, bool] = {}


def run_model(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Any:
    """One forward pass, inputs moved to the model's device, without building a KV cache."""
    device = next(model.parameters()).device
    kwargs: dict[str, Any] = {"input_ids": input_ids.to(device=device, dtype=torch.long)}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask.to(device=device, dtype=torch.long)
    cls = type(model)
    if cls not in _ACCEPTS_USE_CACHE:
        _ACCEPTS_USE_CACHE[cls] = "use_cache" in inspect.signature(model.forward).parameters
    if _ACCEPTS_USE_CACHE[cls]:
        kwargs["use_cache"] = False  # a KV cache is only useful for generation
    return model(**kwargs)


def capture_activations(
    model: Any,
    hook_points: list[str],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    stop_early: bool = True,
) -> dict[str, torch.Tensor]:
    """Run the model and return {hook_point: activation [batch, seq, d_model]} (detached, model dtype).

    With `stop_early` the forward pass ends right after the deepest requested hook point, so
    capturing layer 3 of 12 costs about a quarter of a forward pass.
    """
    model = _unwrap(model)
    points = [parse_hook_point(name) for name in dict.fromkeys(hook_points)]
    if not points:
        raise InvalidInput("hook_points", "is empty", "pass at least one hook point name")
    deepest = max(points, key=lambda p: p.order)
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def keep(point: HookPoint, act: torch.Tensor) -> None:
        captured[point.name] = act.detach()
        if stop_early and point is deepest:
            raise _StopForward

    try:
        for point in points:
            module, where = _target(model, point)
            if where == "pre":
                hook = lambda mod, args, kwargs, p=point: keep(p, _pre_input(args, kwargs))  # noqa: E731
                handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
            else:
                hook = lambda mod, args, out, p=point: keep(p, _first(out))  # noqa: E731
                handles.append(module.register_forward_hook(hook))
        with torch.no_grad():
            try:
                run_model(model, input_ids, attention_mask)
            except _StopForward:
                pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [p.name for p in points if p.name not in captured]
    if missing:  # a Layout pointing at a module the forward pass never calls
        raise RuntimeError(f"hook points {missing} did not fire; the Layout for this architecture is wrong")
    return captured


@contextlib.contextmanager
def patch_activation(model: Any, hook_point: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Inside the `with` block, every forward pass uses `fn(act)` in place of the activation at hook_point.

    The SAE engine uses it for CE-loss recovered: splice in the SAE reconstruction, or zero-ablate.
    """
    model = _unwrap(model)
    point = parse_hook_point(hook_point)
    module, where = _target(model, point)

    def replace(act: torch.Tensor) -> torch.Tensor:
        new = fn(act)
        if not isinstance(new, torch.Tensor) or new.shape != act.shape:
            shape = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
            raise InvalidInput(
                "fn", f"returned {shape} for {hook_point}", f"return a tensor of shape {tuple(act.shape)}"
            )
        return new.to(act.dtype)

    if where == "pre":

        def pre_hook(mod, args, kwargs):
            if args:
                return (replace(args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": replace(kwargs["hidden_states"])}

        handle = module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:

        def out_hook(mod, args, out):
            if isinstance(out, tuple):
                return (replace(out[0]), *out[1:])
            return replace(out)

        handle = module.register_forward_hook(out_hook)
    try:
        yield
    finally:
        handle.remove()
