"""Hook points: one naming scheme for every architecture, read and patched with forward hooks.

Names follow TransformerLens / SAELens, so SAEs trained here line up with that ecosystem:

    blocks.{L}.hook_resid_pre    residual stream entering block L (L=0: the embedding output)
    blocks.{L}.hook_attn_out     the attention sub-layer's output (what it adds to the residual stream)
    blocks.{L}.hook_mlp_out      the MLP sub-layer's output
    blocks.{L}.hook_resid_post   residual stream leaving block L

Each architecture maps these names onto its own modules with a three-field `Layout`. Adding an
architecture is one line in `LAYOUTS` (in hook_names.py, the torch-free half that validation
before queueing uses) and a test with a tiny random config.

BERT-style encoders are post-LayerNorm: their residual stream is the block's *normalised* output,
and attn_out / mlp_out are the sub-layers' dense outputs before the residual add and LayerNorm.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from mistudio.errors import InvalidInput
from mistudio.models.hook_names import (  # noqa: F401  (re-exported: the torch-free half of this module)
    HOOK_KINDS,
    LAYOUTS,
    HookPoint,
    Layout,
    _describe_choices,
    hook_point_names,
    layout_for,
    parse_hook_point,
    validate_hook_point_in,
)


def _unwrap(model: Any) -> Any:
    """Accept a LoadedModel (anything with `.model`) where a model is expected."""
    inner = getattr(model, "model", None)
    if not isinstance(model, nn.Module) and isinstance(inner, nn.Module):
        return inner
    return model


def list_hook_points(model: Any) -> list[str]:
    """The hook points of a model, LoadedModel or transformers config, in execution order."""
    model = _unwrap(model)
    config = getattr(model, "config", model)
    layout_for(getattr(config, "model_type", None))
    return hook_point_names(int(config.num_hidden_layers))


def validate_hook_point(model_or_metadata: Any, hook_point: str) -> None:
    """Raise InvalidInput unless `hook_point` exists. Works from `model_metadata()` alone (before queueing)."""
    if isinstance(model_or_metadata, dict):
        validate_hook_point_in(model_or_metadata, hook_point)
        return
    valid = list_hook_points(model_or_metadata)
    config = getattr(_unwrap(model_or_metadata), "config", model_or_metadata)
    validate_hook_point_in({"hook_points": valid, "model_type": getattr(config, "model_type", None)}, hook_point)


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
