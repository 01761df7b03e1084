"""The ablation effect on a tiny random GPT-2: the increase in next-token loss when one feature is
removed by the error-preserving splice (x -> x - a_i * W_dec[i])."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mistudio.errors import InvalidInput
from mistudio.features.ablation import ablation_effects, per_feature
from mistudio.models.hooks import capture_activations, patch_activation
from mistudio.sae.relu import ReluSAE
from tests.ml_helpers import tiny_gpt2, tiny_gpt2_dir  # noqa: F401  (fixtures)

HOOK = "blocks.0.hook_resid_post"
SILENT = 3  # a feature whose encoder bias keeps it at 0 on every token


@pytest.fixture(scope="module")
def setup(tiny_gpt2):  # noqa: F811
    from pydoc_data.topics import topics

    text = " ".join(topics[k] for k in sorted(topics)[:20])
    ids = torch.tensor(tiny_gpt2.tokenizer(text)["input_ids"][: 4 * 32]).view(4, 32)
    mask = torch.ones_like(ids)
    mask[3, 20:] = 0  # a padded context
    torch.manual_seed(0)
    sae = ReluSAE(64, 16).requires_grad_(False)  # random directions: each fires on about half the tokens
    sae.b_enc[SILENT] = -1e4
    acts = capture_activations(tiny_gpt2, [HOOK], ids, mask)[HOOK]
    z = sae.encode(acts) * mask[..., None]
    assert float(z[..., SILENT].abs().max()) == 0.0 and int((z > 0).sum()) > 0
    return tiny_gpt2, sae, ids, mask, z


def _pairs(z, features):
    """Each feature's peak context and position (as the top contexts give them)."""
    peak = z.amax(dim=1)  # [contexts, d_sae]
    rows, feats, pos = [], [], []
    for f in features:
        for c in range(z.shape[0]):
            rows.append(c)
            feats.append(f)
            pos.append(int(z[c, :, f].argmax()))
    return torch.tensor(rows), torch.tensor(feats), torch.tensor(pos), peak


def _effects(model, sae, ids, mask, rows, feats, pos, **kw):
    return ablation_effects(model, HOOK, sae, ids[rows], mask[rows], feats, pos, window=5, **kw)


def test_ablating_a_feature_that_never_fires_changes_nothing(setup):
    model, sae, ids, mask, z = setup
    rows, feats, pos, _ = _pairs(z, [0, SILENT, 1, 2])  # batched together with features that fire
    out = _effects(model, sae, ids, mask, rows, feats, pos)
    silent = (feats == SILENT).numpy()
    assert np.all(out.window[silent] == 0.0) and np.all(out.peak[silent] == 0.0)
    fired = np.array([bool(z[r, :, f].any()) for r, f in zip(rows.tolist(), feats.tolist())])
    assert np.all(out.window[fired] != 0.0)  # the others do move the loss


def test_the_effect_equals_a_direct_computation_for_one_feature(setup):
    model, sae, ids, mask, z = setup
    f = int(z.amax(dim=(0, 1)).argmax())  # the strongest feature
    c, p = 0, int(z[0, :, f].argmax())
    x, m = ids[c : c + 1], mask[c : c + 1]

    def ablate(act):
        a = sae.encode(act)[..., f] * m  # its activation on every counted token
        return act - a[..., None] * sae.W_dec[f]

    def losses(replace=None):
        with torch.no_grad():
            if replace is None:
                logits = model.model(x, attention_mask=m).logits
            else:
                with patch_activation(model, HOOK, replace):
                    logits = model.model(x, attention_mask=m).logits
        return F.cross_entropy(logits[0, :-1], x[0, 1:], reduction="none")

    delta = losses(ablate) - losses()
    others = [g for g in range(sae.d_sae) if g != f][:5]
    rows, feats, pos, _ = _pairs(z, others)
    rows = torch.cat([rows, torch.tensor([c])])
    feats, pos = torch.cat([feats, torch.tensor([f])]), torch.cat([pos, torch.tensor([p])])
    out = _effects(model, sae, ids, mask, rows, feats, pos)
    assert out.peak[-1] == pytest.approx(float(delta[p]), rel=1e-4, abs=1e-6)
    assert out.window[-1] == pytest.approx(float(delta[p : p + 6].mean()), rel=1e-4, abs=1e-6)
    assert abs(out.window[-1]) > 1e-4


def test_batching_does_not_change_the_answer(setup):
    model, sae, ids, mask, z = setup
    rows, feats, pos, _ = _pairs(z, range(sae.d_sae))
    batched = _effects(model, sae, ids, mask, rows, feats, pos)
    calls = []
    one_by_one = _effects(model, sae, ids, mask, rows, feats, pos, memory_budget=1,
                          progress=lambda done, total: calls.append((done, total)))
    np.testing.assert_allclose(one_by_one.window, batched.window, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(one_by_one.peak, batched.peak, rtol=1e-4, atol=1e-6)
    assert calls[-1] == (len(rows), len(rows)) and len(calls) == len(rows)


def test_a_peak_at_the_last_real_token_has_no_next_token(setup):
    model, sae, ids, mask, z = setup
    out = _effects(model, sae, ids, mask, torch.tensor([3, 0]), torch.tensor([0, 0]), torch.tensor([19, 31]))
    assert np.isnan(out.peak).all() and np.isnan(out.window).all()  # context 3 ends at 19, context 0 at 31


def test_per_feature_means_ignore_pairs_without_a_value():
    mean, count = per_feature(3, np.array([0, 0, 2, 2]), np.array([1.0, 3.0, np.nan, 4.0]))
    assert mean[0] == 2.0 and np.isnan(mean[1]) and mean[2] == 4.0
    assert count.tolist() == [2, 0, 1]


def test_bad_input_is_refused(setup):
    model, sae, ids, mask, z = setup
    with pytest.raises(InvalidInput) as info:
        ablation_effects(model.model.transformer, HOOK, sae, ids, mask, torch.zeros(4), torch.zeros(4))
    assert info.value.field == "model"  # the trunk has no LM head
    with pytest.raises(InvalidInput) as info:
        ablation_effects(model, HOOK, sae, ids, mask, torch.full((4,), sae.d_sae), torch.zeros(4))
    assert info.value.field == "features"
