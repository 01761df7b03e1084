"""Feature steering from Python: `mistudio.steer(...)` submits a `steer` job and returns its Job.

    job = mistudio.steer("tr_abc123", "The weather today is", {123: 4.0})
    with mistudio.events.Subscription(job.channel()) as sub: ...   # generation.token events, live
    result = job.result()                            # default and steered completions side by side

The request is checked before anything is queued (mistudio/tasks/steering.py's validate); the job
runs on the gpu queue, counted against the seed's "generations" tier (20 an hour) and one at a time
per device. The ML core is mistudio/features/steering.py.
"""

from __future__ import annotations

from typing import Any

from mistudio.errors import InvalidInput
from mistudio.jobs import Job, submit


def feature_list(features: Any) -> Any:
    """{index: strength}, [(index, strength)] or [{"index", "strength"}] as the request's list of dicts;
    anything else is passed on for the request check to name."""
    if isinstance(features, dict) and "index" not in features:
        return [{"index": index, "strength": strength} for index, strength in features.items()]
    if isinstance(features, dict):
        return [features]
    if isinstance(features, (list, tuple)):
        return [{"index": f[0], "strength": f[1]} if isinstance(f, (list, tuple)) and len(f) == 2 else
                {"index": f} if isinstance(f, int) and not isinstance(f, bool) else f for f in features]
    if isinstance(features, int) and not isinstance(features, bool):
        return [{"index": features}]
    return features


def steer(
    training_id: str,
    prompt: str | list[str] | None = None,
    features: Any = None,
    *,
    prompts: list[str] | None = None,
    method: str = "additive",
    strength_unit: str = "max_activation",
    positions: str | int = "all",
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    sweep: list[float] | None = None,
    settings=None,
) -> Job:
    """Generate default and steered completions of `prompt` (or `prompts`) with the run's SAE.

    features: {index: strength}, e.g. {123: 4.0}; strengths are in units of the feature's max activation
    (from its feature analysis) unless strength_unit="raw". method: "additive" (add strength x the
    feature's decoder direction), "clamp" (set the feature's activation to strength) or "ablate" (set it
    to 0; strengths may be left out). positions: "all", or the index of the first token steered.
    sweep: strengths for the first feature, one steered completion each. Default and steered use the
    same seed. `Job.result()` returns {"prompts": [{"prompt", "default", "steered": [...]}], ...}.
    """
    if prompts is None:
        prompts = [prompt] if isinstance(prompt, str) else prompt
    elif prompt is not None:
        raise InvalidInput("prompt", "given together with prompts", "pass prompt='...' or prompts=[...], not both")
    request = {"training_id": training_id, "prompts": prompts, "features": feature_list(features), "method": method,
               "strength_unit": strength_unit, "positions": positions, "max_new_tokens": max_new_tokens,
               "temperature": temperature, "top_p": top_p, "seed": seed, "sweep": sweep}
    return submit("steer", request, settings=settings)
