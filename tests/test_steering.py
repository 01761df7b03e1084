"""Feature steering on the tiny random-init GPT-2 with a tiny SAE at its last block (weights don't matter:
the properties below hold for any model)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from ml_helpers import tiny_gpt2, tiny_gpt2_dir, tiny_model  # noqa: F401  (fixtures)

from mistudio.errors import InvalidInput
from mistudio.steering_request import check_against_model, check_request
from mistudio.features.steering import Intervention, apply_intervention, intervening, steer
from mistudio.models.hooks import capture_activations, run_model
from mistudio.sae import ReluSAE

HOOK = "blocks.1.hook_resid_post"  # the last block: straight into ln_f and the unembedding
PROMPT = "The function returns a list of"
D_SAE = 32


@pytest.fixture
def sae():
    return ReluSAE(64, D_SAE, generator=torch.Generator().manual_seed(1)).eval().requires_grad_(False)


def request(**overrides) -> dict:
    base = {"training_id": "run1", "prompts": [PROMPT], "features": [{"index": 3, "strength": 0.0}],
            "strength_unit": "raw", "max_new_tokens": 12, "temperature": 1.0, "top_p": 0.9, "seed": 7}
    return check_request({**base, **overrides})


def prompt_ids(model, text=PROMPT) -> torch.Tensor:
    return torch.tensor([model.tokenizer(text, add_special_tokens=False)["input_ids"]])


def completions(result: dict) -> tuple[dict, list[dict]]:
    only = result["prompts"][0]
    return only["default"], only["steered"]


def test_strength_zero_is_the_default_token_for_token(tiny_gpt2, sae):
    default, steered = completions(steer(tiny_gpt2, sae, HOOK, request()))
    assert len(default["token_ids"]) > 3  # sampled, not an immediate EOS
    assert steered[0]["token_ids"] == default["token_ids"]
    assert steered[0]["text"] == default["text"]
    assert steered[0]["logprobs"] == pytest.approx(default["logprobs"], abs=1e-5)
    # ...and a real push does change the completion (the test above can fail).
    pushed = completions(steer(tiny_gpt2, sae, HOOK, request(features=[{"index": 3, "strength": 40.0}])))[1][0]
    assert pushed["token_ids"] != default["token_ids"]


def test_same_seed_same_default_and_a_new_seed_a_new_one(tiny_gpt2, sae):
    first = completions(steer(tiny_gpt2, sae, HOOK, request(seed=11)))[0]
    again = completions(steer(tiny_gpt2, sae, HOOK, request(seed=11)))[0]
    other = completions(steer(tiny_gpt2, sae, HOOK, request(seed=12)))[0]
    assert first["token_ids"] == again["token_ids"]
    assert other["token_ids"] != first["token_ids"]


def test_a_direction_along_a_tokens_unembedding_raises_its_logprob_monotonically(tiny_gpt2, sae):
    ids = prompt_ids(tiny_gpt2)
    lm = tiny_gpt2.model
    with torch.no_grad():
        clean = torch.log_softmax(run_model(lm, ids).logits[0, -1], dim=-1)
    target = int(clean.argsort()[len(clean) // 2])  # a middling token, not the model's favourite
    W_U = lm.get_output_embeddings().weight.detach()
    with torch.no_grad():
        sae.W_dec[5] = W_U[target] / W_U[target].norm()
    strengths = [0.0, 1.0, 2.0, 4.0, 8.0, 16.0]
    logprobs = []
    for s in strengths:
        edit = Intervention("additive", torch.tensor([5]), torch.tensor([[s]]), torch.tensor([[True]]))
        with intervening(lm, sae, HOOK, edit), torch.no_grad():
            logprobs.append(float(torch.log_softmax(run_model(lm, ids).logits[0, -1], dim=-1)[target]))
    assert logprobs[0] == pytest.approx(float(clean[target]), abs=1e-5)
    assert all(b > a for a, b in zip(logprobs, logprobs[1:])), logprobs
    # End to end, greedy: pushed hard enough, the model says the target token next.
    result = steer(tiny_gpt2, sae, HOOK, request(features=[{"index": 5, "strength": 16.0}], temperature=0.0,
                                                 max_new_tokens=1))
    default, steered = completions(result)
    assert default["token_ids"] != [target]
    assert steered[0]["token_ids"] == [target]
    assert steered[0]["logprobs"][0] == pytest.approx(logprobs[-1], abs=1e-4)


def test_ablating_a_feature_that_never_fires_changes_nothing(tiny_gpt2, sae):
    with torch.no_grad():
        sae.b_enc[9] = -1e4  # feature 9 is off for every token, prompt and generated
    acts = sae.encode(capture_activations(tiny_gpt2, [HOOK], prompt_ids(tiny_gpt2))[HOOK])
    assert float(acts[..., 9].max()) == 0.0
    assert float(acts.max()) > 0  # other features do fire
    default, steered = completions(steer(tiny_gpt2, sae, HOOK, request(method="ablate",
                                                                        features=[{"index": 9}])))
    assert steered[0]["token_ids"] == default["token_ids"]
    # Equal to float32 rounding: the two completions run as one batch or two, and a matmul's
    # kernel (so its last bits) can depend on the batch shape and the threads free at the time.
    assert steered[0]["logprobs"] == pytest.approx(default["logprobs"], abs=1e-5)
    assert steered[0]["features"] == [{"index": 9, "strength": 0.0}]


def test_ablating_a_feature_that_fires_zeroes_it_and_changes_the_distribution(tiny_gpt2, sae):
    ids = prompt_ids(tiny_gpt2)
    x = capture_activations(tiny_gpt2, [HOOK], ids)[HOOK]
    feature = int(sae.encode(x)[0, -1].argmax())
    edit = Intervention("ablate", torch.tensor([feature]), torch.tensor([[0.0]]), torch.tensor([[True]]))
    patched = apply_intervention(x, sae, edit)
    assert float(sae.encode(patched)[0, -1, feature]) == pytest.approx(0.0, abs=1e-4)
    assert not torch.allclose(patched, x)


def test_clamp_sets_the_feature_activation_read_back_through_the_sae(tiny_gpt2, sae):
    lm, ids, feature, value = tiny_gpt2.model, prompt_ids(tiny_gpt2), 4, 7.5
    with torch.no_grad():
        sae.b_enc[feature] = 50.0  # on at every position, so the splice is exact there (tied encoder)
    before = sae.encode(capture_activations(lm, [HOOK], ids)[HOOK])[0, :, feature]
    assert bool((before > 0).all()) and not torch.allclose(before, torch.full_like(before, value))
    start = 2
    edit = Intervention("clamp", torch.tensor([feature]), torch.tensor([[value]]), torch.tensor([[True]]), start=start)
    with intervening(lm, sae, HOOK, edit):  # the capture hook sees the activation the model goes on with
        after = sae.encode(capture_activations(lm, [HOOK], ids)[HOOK])[0, :, feature]
    assert after[start:].tolist() == pytest.approx([value] * (len(after) - start), abs=1e-3)
    assert after[:start].tolist() == pytest.approx(before[:start].tolist(), abs=1e-5)  # before `positions`


def test_stream_tokens_equal_the_returned_completions(tiny_gpt2, sae):
    events = []
    req = request(prompts=[PROMPT, "In the beginning"], sweep=[0.0, 5.0, 20.0])
    result = steer(tiny_gpt2, sae, HOOK, req, on_token=events.append)
    assert result["stopped"] is False
    for p, entry in enumerate(result["prompts"]):
        branches = [("default", None, entry["default"])] + [("steered", i, s) for i, s in enumerate(entry["steered"])]
        for branch, index, completion in branches:
            mine = [e for e in events if (e["prompt_index"], e["branch"], e["steered_index"]) == (p, branch, index)]
            assert [e["position"] for e in mine] == list(range(len(completion["token_ids"])))
            assert [e["token_id"] for e in mine] == completion["token_ids"]
            assert [e["token"] for e in mine] == completion["tokens"]
            assert "".join(completion["tokens"]) == completion["text"]
            assert [e["logprob"] for e in mine] == completion["logprobs"]
    steered = result["prompts"][0]["steered"]
    assert [s["strength"] for s in steered] == [0.0, 5.0, 20.0]  # one completion per sweep strength
    assert steered[1]["features"] == [{"index": 3, "strength": 5.0}]
    assert steered[0]["token_ids"] == result["prompts"][0]["default"]["token_ids"]
    assert all(math.isfinite(lp) and lp <= 0 for e in events for lp in [e["logprob"]])


def test_strength_in_units_of_max_activation_is_raw_strength_times_it(tiny_gpt2, sae):
    scaled = steer(tiny_gpt2, sae, HOOK, request(strength_unit="max_activation",
                                                 features=[{"index": 3, "strength": 2.0}]), max_activations={3: 6.5})
    raw = steer(tiny_gpt2, sae, HOOK, request(features=[{"index": 3, "strength": 13.0}]))
    assert completions(scaled)[1][0]["token_ids"] == completions(raw)[1][0]["token_ids"]
    assert completions(scaled)[1][0]["features"] == [{"index": 3, "strength": 2.0}]  # reported as asked


def test_should_stop_ends_generation_with_what_was_made(tiny_gpt2, sae):
    calls = []
    result = steer(tiny_gpt2, sae, HOOK, request(max_new_tokens=20), should_stop=lambda: len(calls.append(1) or calls) > 3)
    assert result["stopped"] is True
    assert len(result["prompts"][0]["default"]["token_ids"]) <= 3


# --- bad input: a clear error naming the field and the fix ------------------------------------------


def _refused(field: str, fix_word: str, fn, *args, **kwargs) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        fn(*args, **kwargs)
    assert info.value.field == field, str(info.value)
    assert fix_word in (info.value.fix or ""), str(info.value)
    return info.value


def test_feature_index_out_of_range(tiny_gpt2, sae):
    err = _refused("features[0].index", f"0..{D_SAE - 1}", steer, tiny_gpt2, sae, HOOK,
                   request(features=[{"index": D_SAE, "strength": 1.0}]))
    assert f"{D_SAE} features" in err.problem


def test_a_model_without_lm_head_is_refused_naming_a_causal_model(tiny_gpt2, sae):
    class Encoder:  # the tiny GPT-2 trunk without its head, with the same tokenizer
        model, tokenizer, name = tiny_model("gpt2", causal_lm=False), tiny_gpt2.tokenizer, "trunk-only"

    err = _refused("training_id", "gpt2", steer, Encoder(), sae, HOOK, request())
    assert "no language-model head" in err.problem


@pytest.mark.parametrize("prompts, field", [([""], "prompts[0]"), (["ok", "  "], "prompts[1]"), ([], "prompts")])
def test_empty_prompts(prompts, field):
    _refused(field, "text" if field != "prompts" else "prompt=", request, prompts=prompts)


@pytest.mark.parametrize("overrides, field", [
    ({"features": [{"index": 3, "strength": float("nan")}]}, "features[0].strength"),
    ({"features": [{"index": 3, "strength": float("inf")}]}, "features[0].strength"),
    ({"sweep": [1.0, float("-inf")]}, "sweep[1]"),
    ({"temperature": float("nan")}, "temperature"),
    ({"features": [{"index": 3, "strength": "4"}]}, "features[0].strength"),
])
def test_non_finite_strengths(overrides, field):
    _refused(field, "finite" if field != "temperature" else "greedy", request, **overrides)


def test_too_many_new_tokens_for_the_context(tiny_gpt2, sae):
    meta = {"has_lm_head": True, "max_context": 256}
    _refused("max_new_tokens", "fewer than 256", check_against_model, request(max_new_tokens=256), d_sae=D_SAE,
             model_metadata=meta, model_name="tiny", max_activations=None)
    n_prompt = prompt_ids(tiny_gpt2).shape[1]
    err = _refused("max_new_tokens", f"at most {256 - n_prompt}", steer, tiny_gpt2, sae, HOOK,
                   request(max_new_tokens=250))
    assert "context of 256" in err.problem


def test_other_request_errors(tiny_gpt2, sae):
    _refused("method", "additive", request, method="boost")
    _refused("sweep", "additive", request, method="ablate", sweep=[1.0])
    _refused("features[1].index", "once", request, features=[{"index": 1, "strength": 1}, {"index": 1, "strength": 2}])
    _refused("features[0].strength", "strength", request, features=[{"index": 1}])
    _refused("top_p", "0.9", request, top_p=0.0)
    _refused("max_new_tokens", "fewer", request, prompts=["a"] * 16, sweep=[1.0] * 16, max_new_tokens=100)
    _refused("colour", "prompts", request, colour="red")
    _refused("positions", "'all'", steer, tiny_gpt2, sae, HOOK, request(positions=500))
    _refused("strength_unit", "mistudio features run1", steer, tiny_gpt2, sae, HOOK,
             request(strength_unit="max_activation"))
    _refused("features[0].index", "raw", steer, tiny_gpt2, sae, HOOK, request(strength_unit="max_activation"),
             max_activations={3: 0.0})


def test_checking_a_request_imports_no_torch():
    code = ("import sys; from mistudio.steering_request import check_request; "
            "check_request({'training_id': 'r', 'prompts': ['x'], 'features': [{'index': 1, 'strength': 2}]}); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_character_split_across_byte_tokens_shows_once_whole_and_the_tokens_join_to_the_text(tiny_gpt2):
    from mistudio.features.steering import _new_text

    tokenizer = tiny_gpt2.tokenizer
    text = "café ✓ naïve"
    ids = tokenizer.encode(text)
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)  # some token holds part of a character
    row = {"token_ids": [], "_shown": 0}
    pieces = []
    for token_id in ids:
        row["token_ids"].append(token_id)
        pieces.append(_new_text(tokenizer, row))
    assert "".join(pieces) == text and not any("\ufffd" in piece for piece in pieces)
