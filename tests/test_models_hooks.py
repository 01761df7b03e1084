"""Hook points on every supported architecture (tiny random models) and on the bundled MiniLM."""

from __future__ import annotations

import json

import pytest
import torch
from ml_helpers import minilm, tiny_model  # noqa: F401  (minilm is a fixture)

from mistudio.errors import InvalidInput
from mistudio.models import (
    capture_activations,
    list_hook_points,
    model_metadata,
    patch_activation,
    validate_hook_point,
)
from mistudio.models.hooks import LAYOUTS, hook_point_names

DECODERS = ["gpt2", "gpt_neox", "llama", "mistral", "qwen2", "qwen3"]
ENCODERS = ["bert", "roberta"]
FINAL_NORM = {"gpt2": "ln_f", "gpt_neox": "final_layer_norm"}  # others: "norm"


def _ids(seed=0, batch=2, seq=12):
    return torch.randint(3, 500, (batch, seq), generator=torch.Generator().manual_seed(seed))


def test_every_layout_is_tested():
    assert set(LAYOUTS) == set(DECODERS + ENCODERS)


@pytest.mark.parametrize("model_type", DECODERS + ENCODERS)
def test_resid_hooks_equal_hidden_states_and_sublayers_add_up(model_type):
    model = tiny_model(model_type)
    ids = _ids()
    hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    names = list_hook_points(model)
    assert names == hook_point_names(2)
    acts = capture_activations(model, names, ids, stop_early=False)
    for layer in range(2):
        assert torch.equal(acts[f"blocks.{layer}.hook_resid_pre"], hidden[layer])
        for kind in ("attn_out", "mlp_out", "resid_post"):
            assert acts[f"blocks.{layer}.hook_{kind}"].shape == (2, 12, 64)
    assert torch.equal(acts["blocks.0.hook_resid_post"], hidden[1])
    last = acts["blocks.1.hook_resid_post"]
    if model_type in DECODERS:
        # transformers reports the last hidden state after the final norm; ours is the raw residual stream.
        final_norm = getattr(model.base_model, FINAL_NORM.get(model_type, "norm"))
        torch.testing.assert_close(final_norm(last), hidden[2])
        # Pre-LN decoders: the residual stream is the sum of what attention and the MLP add to it.
        for layer in range(2):
            parts = [acts[f"blocks.{layer}.hook_{k}"] for k in ("resid_pre", "attn_out", "mlp_out")]
            torch.testing.assert_close(sum(parts), acts[f"blocks.{layer}.hook_resid_post"])
    else:
        assert torch.equal(last, hidden[2])


def test_minilm_hooks_match_hidden_states(minilm):
    batch = minilm.tokenizer(
        ["The quick brown fox.", "Sparse autoencoders find features."], return_tensors="pt", padding=True
    )
    hidden = minilm.model(**batch, output_hidden_states=True).hidden_states
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(6)] + ["blocks.0.hook_resid_pre"]
    acts = capture_activations(minilm, names, batch["input_ids"], batch["attention_mask"])
    assert torch.equal(acts["blocks.0.hook_resid_pre"], hidden[0])
    for layer in range(6):
        assert torch.equal(acts[f"blocks.{layer}.hook_resid_post"], hidden[layer + 1])
    mlp = capture_activations(minilm, ["blocks.2.hook_mlp_out", "blocks.2.hook_attn_out"], batch["input_ids"])
    assert {k: tuple(v.shape) for k, v in mlp.items()} == {
        "blocks.2.hook_mlp_out": (2, batch["input_ids"].shape[1], 384),
        "blocks.2.hook_attn_out": (2, batch["input_ids"].shape[1], 384),
    }


@pytest.mark.parametrize("model_type", ["gpt2", "bert"])
def test_stop_early_skips_later_layers_and_gives_same_values(model_type):
    model = tiny_model(model_type)
    ran = []
    blocks = model.base_model.h if model_type == "gpt2" else model.base_model.encoder.layer
    handles = [b.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, b in enumerate(blocks)]
    head = model.get_output_embeddings()
    if head is not None:
        handles.append(head.register_forward_hook(lambda m, a, o: ran.append("head")))
    try:
        ids = _ids()
        early = capture_activations(model, ["blocks.0.hook_mlp_out"], ids)
        assert ran == []  # block 0's own forward hook never ran: we stopped inside it, after its MLP
        full = capture_activations(model, ["blocks.0.hook_resid_post"], ids, stop_early=False)
        assert ran[-1] == ("head" if head is not None else 1)
        ran.clear()
        capture_activations(model, ["blocks.0.hook_resid_post"], ids)
        assert ran == [0]
    finally:
        for h in handles:
            h.remove()
    assert early["blocks.0.hook_mlp_out"].shape == full["blocks.0.hook_resid_post"].shape


@pytest.mark.parametrize("model_type", ["gpt2", "gpt_neox", "llama"])
def test_patch_identity_keeps_logits_and_zero_ablation_changes_them(model_type):
    model = tiny_model(model_type)
    ids = _ids()
    with torch.no_grad():
        clean = model(input_ids=ids).logits
        for point in (
            "blocks.0.hook_resid_pre",
            "blocks.1.hook_resid_post",
            "blocks.0.hook_mlp_out",
            "blocks.1.hook_attn_out",
        ):
            with patch_activation(model, point, lambda a: a):
                assert torch.equal(model(input_ids=ids).logits, clean), point
            with patch_activation(model, point, torch.zeros_like):
                assert not torch.allclose(model(input_ids=ids).logits, clean), point
        assert torch.equal(model(input_ids=ids).logits, clean)  # hooks removed on exit


def test_patch_is_seen_by_capture_downstream():
    model = tiny_model("gpt2")
    ids = _ids()
    with patch_activation(model, "blocks.1.hook_resid_pre", lambda a: a * 0 + 1.5):
        acts = capture_activations(model, ["blocks.1.hook_resid_pre", "blocks.0.hook_resid_post"], ids)
    assert torch.all(acts["blocks.1.hook_resid_pre"] == 1.5)
    assert not torch.all(acts["blocks.0.hook_resid_post"] == 1.5)  # upstream is untouched


def test_patch_fn_with_wrong_shape_is_reported():
    model = tiny_model("gpt2")
    with patch_activation(model, "blocks.0.hook_mlp_out", lambda a: a[..., :3]):
        with pytest.raises(InvalidInput, match="fn: returned"):
            model(input_ids=_ids())


def test_validate_hook_point_from_metadata_alone(minilm):
    meta = json.loads(json.dumps(minilm.metadata))  # what comes back from the Redis cache
    validate_hook_point(meta, "blocks.5.hook_resid_post")
    with pytest.raises(InvalidInput) as err:
        validate_hook_point(meta, "blocks.6.hook_resid_post")
    message = str(err.value)
    assert err.value.field == "hook_point" and "'blocks.6.hook_resid_post'" in message
    assert "blocks.5.hook_resid_post" in message and "blocks.0.hook_resid_pre" in message
    with pytest.raises(InvalidInput, match="'layer3' is not a hook point of this bert model"):
        validate_hook_point(minilm, "layer3")
    with pytest.raises(InvalidInput, match="hook_point"):
        capture_activations(minilm, ["blocks.9.hook_mlp_out"], torch.tensor([[101, 102]]))


def test_big_models_list_choices_as_a_pattern():
    meta = {"model_type": "llama", "hook_points": hook_point_names(32)}
    with pytest.raises(InvalidInput, match=r"L in 0\.\.31"):
        validate_hook_point(meta, "blocks.32.hook_resid_post")


def test_unsupported_architecture_is_named():
    from transformers import T5Config

    meta = model_metadata(T5Config(num_layers=2, d_model=64, vocab_size=100))
    assert meta["hooks_supported"] is False and meta["hook_points"] == []
    with pytest.raises(InvalidInput, match="'t5' has no hook-point mapping"):
        validate_hook_point(meta, "blocks.0.hook_resid_post")
