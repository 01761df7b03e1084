"""A steering request, checked without torch: at submit (well under a second) and again in the worker.

    request = check_request({"training_id": "run1", "prompts": ["The cat"],
                             "features": [{"index": 12, "strength": 4.0}]})

`check_request` fills defaults and refuses bad input field by field (InvalidInput names the field and
the fix). `check_against_model` adds what the SAE and the model's config say (feature index range,
an LM head, the context length), from metadata only. The tokenized prompt length is checked in
`mistudio.features.steering`, where the tokenizer is loaded.
"""

from __future__ import annotations

import math
from typing import Any

from mistudio.errors import InvalidInput
from mistudio.validation import name, only, preview

METHODS = ("additive", "clamp", "ablate")
STRENGTH_UNITS = ("max_activation", "raw")
MAX_PROMPTS = 16
MAX_PROMPT_CHARS = 20_000
MAX_FEATURES = 32
MAX_SWEEP = 16  # one steered completion per strength, all in one batch
MAX_NEW_TOKENS = 1024
MAX_STREAMED_TOKENS = 16_384  # per steer: every token is one event, and a channel keeps 20,000 for late readers
STRENGTH_LIMIT = 1e6  # finite but absurd strengths only overflow half-precision activations
DEFAULTS: dict[str, Any] = {
    "method": "additive", "strength_unit": "max_activation", "positions": "all", "max_new_tokens": 32,
    "temperature": 1.0, "top_p": 1.0, "seed": 0, "sweep": None,
}
FIELDS = ("training_id", "prompts", "features", *DEFAULTS)
CAUSAL_EXAMPLE = ("the offline reference LM (model='reference', built by `mistudio models build-reference --wait`) "
                  "or a hub causal LM such as 'openai-community/gpt2'")


def _number(value: Any, field: str, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(field, f"must be a number, got {preview(value)}", fix)
    if not math.isfinite(value):
        raise InvalidInput(field, f"must be finite, got {value!r}", fix)
    if abs(value) > STRENGTH_LIMIT:
        raise InvalidInput(field, f"{value!r} is beyond +-{STRENGTH_LIMIT:g}", fix)
    return float(value)


def _integer(value: Any, field: str, low: int, high: int | None, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, f"must be an integer, got {preview(value)}", fix)
    if value < low or (high is not None and value > high):
        limits = f"{low}..{high}" if high is not None else f">= {low}"
        raise InvalidInput(field, f"must be in {limits}, got {value}", fix)
    return value


def _prompts(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise InvalidInput("prompts", f"must be a non-empty list of strings, got {preview(value)}",
                           "pass prompt='Once upon a time' or prompts=['...', '...']")
    if len(value) > MAX_PROMPTS:
        raise InvalidInput("prompts", f"{len(value)} prompts, at most {MAX_PROMPTS}", "split them over several steers")
    for i, prompt in enumerate(value):
        if not isinstance(prompt, str):
            raise InvalidInput(f"prompts[{i}]", f"must be a string, got {preview(prompt)}", "pass text")
        if not prompt.strip():
            raise InvalidInput(f"prompts[{i}]", "is empty", "give some text for the model to continue")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidInput(f"prompts[{i}]", f"is {len(prompt):,} characters, at most {MAX_PROMPT_CHARS:,}",
                               "shorten the prompt")
    return list(value)


def _features(value: Any, method: str) -> list[dict]:
    if not isinstance(value, (list, tuple)) or not value:
        raise InvalidInput("features", f"must be a non-empty list of {{index, strength}}, got {preview(value)}",
                           "pass features=[{'index': 123, 'strength': 4.0}]")
    if len(value) > MAX_FEATURES:
        raise InvalidInput("features", f"{len(value)} features, at most {MAX_FEATURES}", "steer fewer features at once")
    out, seen = [], set()
    for i, item in enumerate(value):
        field = f"features[{i}]"
        if not isinstance(item, dict):
            raise InvalidInput(field, f"must be {{'index': int, 'strength': float}}, got {preview(item)}",
                               "pass {'index': 123, 'strength': 4.0}")
        only(item, ("index", "strength"), field)
        index = _integer(item.get("index"), f"{field}.index", 0, None, "give the feature's index (its card number)")
        if index in seen:
            raise InvalidInput(f"{field}.index", f"feature {index} is listed twice", "list each feature once")
        seen.add(index)
        default = 0.0 if method == "ablate" else None
        strength = item.get("strength", default)
        if strength is None:
            raise InvalidInput(f"{field}.strength", "is missing", "give a strength, e.g. 4.0 (x max activation)")
        out.append({"index": index, "strength": _number(strength, f"{field}.strength",
                                                        "give a finite strength such as 4.0 or -2.0")})
    return out


def check_request(request: Any) -> dict:
    """The request with defaults filled, or InvalidInput naming the first bad field."""
    if not isinstance(request, dict):
        raise InvalidInput("request", f"must be a dict, got {type(request).__name__}", "pass keyword arguments")
    only(request, FIELDS, "steer")
    req = {**DEFAULTS, **{k: v for k, v in request.items() if v is not None or k == "sweep"}}
    out: dict[str, Any] = {"training_id": name(req.get("training_id"), "training_id")}
    if req["method"] not in METHODS:
        raise InvalidInput("method", f"{preview(req['method'])} is not a steering method", f"use one of {', '.join(METHODS)}")
    if req["strength_unit"] not in STRENGTH_UNITS:
        raise InvalidInput("strength_unit", f"{preview(req['strength_unit'])} is not a unit",
                           "use 'max_activation' (x the feature's largest activation seen) or 'raw'")
    out["prompts"] = _prompts(req.get("prompts"))
    out["features"] = _features(req.get("features"), req["method"])
    out["method"], out["strength_unit"] = req["method"], req["strength_unit"]
    positions = req["positions"]
    if positions != "all":
        _integer(positions, "positions", 0, None, "use 'all' or the index of the first token to steer (0 = first)")
    out["positions"] = positions
    out["max_new_tokens"] = _integer(req["max_new_tokens"], "max_new_tokens", 1, MAX_NEW_TOKENS,
                                     f"ask for 1..{MAX_NEW_TOKENS} new tokens")
    out["temperature"] = _number(req["temperature"], "temperature", "use 0 (greedy) up to about 2")
    if not 0 <= out["temperature"] <= 100:
        raise InvalidInput("temperature", f"must be in 0..100, got {out['temperature']}", "use 0 (greedy) up to about 2")
    out["top_p"] = _number(req["top_p"], "top_p", "use a value in (0, 1], 1 = no nucleus cut")
    if not 0 < out["top_p"] <= 1:
        raise InvalidInput("top_p", f"must be in (0, 1], got {out['top_p']}", "use e.g. 0.9, or 1 for no cut")
    out["seed"] = _integer(req["seed"], "seed", 0, 2**63 - 1, "use a non-negative integer")
    sweep = req.get("sweep")
    if sweep is not None:
        if not isinstance(sweep, (list, tuple)) or not sweep or len(sweep) > MAX_SWEEP:
            raise InvalidInput("sweep", f"must be a list of 1..{MAX_SWEEP} strengths, got {preview(sweep)}",
                               "pass e.g. sweep=[0, 2, 4, 8] (strengths for the first feature)")
        if out["method"] == "ablate":
            raise InvalidInput("sweep", "has no meaning for method 'ablate' (it always sets the feature to 0)",
                               "use method 'additive' or 'clamp' to sweep strengths")
        sweep = [_number(s, f"sweep[{i}]", "give finite strengths") for i, s in enumerate(sweep)]
    out["sweep"] = sweep
    total = len(out["prompts"]) * (1 + (len(sweep) if sweep else 1)) * out["max_new_tokens"]
    if total > MAX_STREAMED_TOKENS:
        raise InvalidInput("max_new_tokens", f"{len(out['prompts'])} prompt(s) x {1 + (len(sweep) if sweep else 1)} "
                           f"completions x {out['max_new_tokens']} tokens is {total:,} tokens, more than "
                           f"{MAX_STREAMED_TOKENS:,} per steer", "ask for fewer new tokens, prompts or sweep strengths")
    return out


def check_against_model(request: dict, *, d_sae: int, model_metadata: dict, model_name: str,
                        max_activations: dict[int, float] | None) -> None:
    """What the SAE and the model's metadata say: index range, an LM head, room for the new tokens,
    and a max activation for every feature when strengths are in units of it."""
    for i, feature in enumerate(request["features"]):
        if feature["index"] >= d_sae:
            raise InvalidInput(f"features[{i}].index", f"{feature['index']} is out of range: this SAE has "
                               f"{d_sae} features (0..{d_sae - 1})", f"pick an index in 0..{d_sae - 1}")
    if not model_metadata.get("has_lm_head"):
        raise InvalidInput("training_id", f"the SAE's model {preview(model_name)} has no language-model head "
                           "(an encoder): there is nothing to generate", f"train an SAE on a causal LM, e.g. {CAUSAL_EXAMPLE}")
    context = model_metadata.get("max_context")
    if context and request["max_new_tokens"] >= context:
        raise InvalidInput("max_new_tokens", f"{request['max_new_tokens']} new tokens do not fit the model's "
                           f"context of {context} tokens with a prompt", f"ask for fewer than {context} new tokens")
    if request["strength_unit"] == "max_activation" and request["method"] != "ablate":
        for i, feature in enumerate(request["features"]):
            top = (max_activations or {}).get(feature["index"])
            if top is None:
                raise InvalidInput("strength_unit", f"no max activation known for feature {feature['index']} (no "
                                   "feature analysis for this run)", f"run `mistudio features {request['training_id']}` "
                                   "first, or use strength_unit='raw'")
            if not math.isfinite(top) or top <= 0:
                raise InvalidInput(f"features[{i}].index", f"feature {feature['index']} never fired in the feature "
                                   "analysis (max activation 0): a strength in units of it means nothing",
                                   "use strength_unit='raw', or pick a live feature")
