"""Feature steering: generate with an SAE feature pushed, clamped or ablated at the SAE's hook point.

No Redis in here (the `steer` job wraps it; tokens go out through `on_token`).

    result = steer(model, sae, "blocks.6.hook_resid_post", check_request({...}), max_activations={12: 3.1})

Methods, on the activation x at the hook point, for each steered feature i (d_i = W_dec[i]):
  additive  x + s * d_i            s = strength (x the feature's max activation, or raw)
  clamp     x + (v - a_i(x)) * d_i the SAE's error-preserving splice with latent i set to v:
                                   decode(z with z_i = v) + (x - decode(z)); v = strength (same units)
  ablate    clamp to 0
applied at every position, or from a token index on (prompt and generated tokens alike).

The default completion and every steered one are rows of one batch, each row sampling from its own
generator seeded with the same seed: with strength 0 a steered row is the default token for token,
and the two stream side by side. Log-probabilities are the (steered) model's own, log_softmax of the
logits before temperature and top-p: what the token cost the model, comparable across settings.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from mistudio.errors import InvalidInput
from mistudio.steering_request import check_against_model
from mistudio.models.hooks import patch_activation
from mistudio.models.metadata import model_metadata

OnToken = Callable[[dict], None]


@dataclass
class Intervention:
    """Per batch row: which features, to what (raw units), where. Row r is left alone where active[r] is all False."""

    method: str  # additive | clamp | ablate
    indices: torch.Tensor  # [F] feature indices
    values: torch.Tensor  # [B, F] raw strength (additive) or target activation (clamp/ablate)
    active: torch.Tensor  # [B, F] bool
    start: int = 0  # first absolute token position edited ("all" = 0)


def apply_intervention(x: torch.Tensor, sae, edit: Intervention, offset: int = 0) -> torch.Tensor:
    """x [B, T, d_in] (absolute positions offset..offset+T-1) with the intervention applied."""
    first = max(edit.start - offset, 0)
    if first >= x.shape[1]:
        return x
    part = x[:, first:].to(sae.W_dec.dtype)
    directions = sae.W_dec[edit.indices]  # [F, d_in]
    weights = torch.where(edit.active, edit.values.to(part.dtype), 0.0)  # [B, F]
    if edit.method == "additive":
        part = part + (weights @ directions)[:, None, :]
    else:  # clamp / ablate: x + (v - a) * d, only for the edited rows and features
        acts = sae.encode(part)[..., edit.indices]  # [B, T', F]
        delta = (weights[:, None, :] - acts) * edit.active[:, None, :]
        part = part + delta @ directions
    return torch.cat([x[:, :first], part.to(x.dtype)], dim=1)


@contextlib.contextmanager
def intervening(model, sae, hook_point: str, edit: Intervention) -> Iterator[dict]:
    """Every forward pass inside edits the hook point's activation; yields a dict whose "offset" the
    caller sets to the absolute position of the first token of the next pass (KV-cached generation)."""
    state = {"offset": 0}
    with patch_activation(model, hook_point, lambda x: apply_intervention(x, sae, edit, state["offset"])):
        yield state


def _forward(lm, inputs: torch.Tensor, cache) -> tuple[torch.Tensor, object]:
    """Last-position logits and the KV cache, under the name this transformers version uses
    ("cache" from 5.x, "past_key_values" before)."""
    name = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"
    output = lm(input_ids=inputs, use_cache=True, **{name: cache})
    return output.logits[:, -1].float(), getattr(output, name)


def _sample(logits: torch.Tensor, temperature: float, top_p: float, generators: list[torch.Generator]) -> torch.Tensor:
    """One token per row, row r drawn with generators[r] (same seed, same draws: identical rows agree)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    probs = probs.cpu()
    return torch.stack([torch.multinomial(probs[r], 1, generator=g)[0] for r, g in enumerate(generators)]).to(logits.device)


def _rows(request: dict, max_activations: dict[int, float] | None) -> tuple[list[dict], torch.Tensor]:
    """The steered rows' descriptions and their raw values [rows, F]."""
    features = request["features"]
    strengths = [[f["strength"] for f in features]]
    if request["sweep"] is not None:
        strengths = [[s, *(f["strength"] for f in features[1:])] for s in request["sweep"]]
    if request["method"] == "ablate":
        strengths = [[0.0] * len(features)]
    scale = [1.0] * len(features)
    if request["strength_unit"] == "max_activation" and request["method"] != "ablate":
        scale = [float(max_activations[f["index"]]) for f in features]
    rows = [{"strength": row[0] if request["sweep"] is not None else None,
             "features": [{"index": f["index"], "strength": s} for f, s in zip(features, row)]} for row in strengths]
    values = torch.tensor([[s * k for s, k in zip(row, scale)] for row in strengths], dtype=torch.float64)
    return rows, values


def steer(
    model,
    sae,
    hook_point: str,
    request: dict,
    *,
    max_activations: dict[int, float] | None = None,
    on_token: OnToken | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Default and steered completions of every prompt (a checked request, see steering_request.check_request).

    `model` is a LoadedModel (model + tokenizer). Returns the agreed result shape:
    {"prompts": [{"prompt", "default": {...}, "steered": [{"strength", "features", "text", "tokens",
    "token_ids", "logprobs"}]}], "stopped": bool}. `on_token(event)` gets every sampled token as it comes.
    """
    lm, tokenizer, name = model.model, model.tokenizer, getattr(model, "name", "model")
    meta = model_metadata(lm)
    check_against_model(request, d_sae=sae.d_sae, model_metadata=meta, model_name=name,
                        max_activations=max_activations)
    context = meta["max_context"]
    encoded = []
    for i, prompt in enumerate(request["prompts"]):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if not ids:
            raise InvalidInput(f"prompts[{i}]", "has no tokens", "give some text for the model to continue")
        total = len(ids) + request["max_new_tokens"]
        if context and total > context:
            raise InvalidInput("max_new_tokens", f"prompt {i} has {len(ids)} tokens; with {request['max_new_tokens']} "
                               f"new ones that is {total}, beyond the model's context of {context}",
                               f"ask for at most {context - len(ids)} new tokens, or shorten the prompt")
        positions = request["positions"]
        if positions != "all" and positions >= total:
            raise InvalidInput("positions", f"{positions} is past the last token ({total - 1}) of prompt {i} and its "
                               "completion: nothing would be steered", f"use 'all' or an index below {total}")
        encoded.append(ids)
    rows, values = _rows(request, max_activations)
    out, stopped = [], False
    for p, (prompt, ids) in enumerate(zip(request["prompts"], encoded)):
        branch, stopped = _generate(lm, tokenizer, sae, hook_point, request, ids, rows, values, p, on_token, should_stop)
        out.append({"prompt": prompt, "default": branch[0], "steered": [{**row, **b} for row, b in zip(rows, branch[1:])]})
        if stopped:
            break
    return {"prompts": out, "stopped": stopped}


@torch.no_grad()
def _generate(lm, tokenizer, sae, hook_point, request, ids, rows, values, prompt_index, on_token, should_stop):
    device = next(lm.parameters()).device
    n_rows = 1 + len(rows)
    sae_dtype = sae.W_dec.dtype
    edit = Intervention(
        method=request["method"],
        indices=torch.tensor([f["index"] for f in request["features"]], device=sae.W_dec.device),
        values=torch.cat([torch.zeros(1, values.shape[1], dtype=torch.float64), values]).to(sae.W_dec.device, sae_dtype),
        active=torch.tensor([[False] * values.shape[1]] + [[True] * values.shape[1]] * len(rows), device=sae.W_dec.device),
        start=0 if request["positions"] == "all" else int(request["positions"]),
    )
    generators = [torch.Generator().manual_seed(request["seed"]) for _ in range(n_rows)]
    eos = tokenizer.eos_token_id
    done = [False] * n_rows
    results = [{"text": "", "tokens": [], "token_ids": [], "logprobs": [], "_shown": 0} for _ in range(n_rows)]
    inputs = torch.tensor([ids] * n_rows, device=device)
    past, stopped = None, False
    with intervening(lm, sae, hook_point, edit) as state:
        for step in range(request["max_new_tokens"]):
            if should_stop is not None and should_stop():
                stopped = True
                break
            logits, past = _forward(lm, inputs, past)
            state["offset"] += inputs.shape[1]
            chosen = _sample(logits, request["temperature"], request["top_p"], generators)
            logprobs = torch.log_softmax(logits, dim=-1).gather(1, chosen[:, None])[:, 0].tolist()
            for r, (token_id, logprob) in enumerate(zip(chosen.tolist(), logprobs)):
                if done[r]:
                    continue
                if token_id == eos:  # the row ends here; the EOS itself is not part of the text
                    done[r] = True
                    continue
                res = results[r]
                res["token_ids"].append(token_id)
                token = _new_text(tokenizer, res)
                res["tokens"].append(token)
                res["logprobs"].append(logprob)
                if on_token is not None:
                    on_token({"prompt_index": prompt_index, "branch": "default" if r == 0 else "steered",
                              "steered_index": None if r == 0 else r - 1, "position": step, "token": token,
                              "token_id": token_id, "logprob": logprob})
            if all(done):
                break
            inputs = chosen[:, None]
    for res in results:
        text = tokenizer.decode(res["token_ids"])
        # A last token that ends inside a character leaves only its replacement mark: not text.
        res["text"] = "".join(res["tokens"]) if text.endswith("\ufffd") else text
        del res["_shown"]
    return results, stopped


def _new_text(tokenizer, res: dict) -> str:
    """The text the row's latest token adds. A byte-level token can end inside a multi-byte character:
    its text waits ("") until the character is whole, so the tokens always join to the row's text."""
    text = tokenizer.decode(res["token_ids"])
    if text.endswith("\ufffd"):
        return ""
    shown, res["_shown"] = res["_shown"], len(text)
    return text[shown:]
