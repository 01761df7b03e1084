"""CE-loss recovered and KL divergence on a tiny random GPT-2 with an LM head (weights don't matter here)."""

from __future__ import annotations

import pytest
import torch

from mistudio.errors import InvalidInput
from mistudio.models.hooks import capture_activations, patch_activation
from mistudio.sae import Trainer, TrainingConfig
from mistudio.sae.evaluation import CELossEvaluator, ce_loss_recovered

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def tiny_lm():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=97, n_positions=64)).eval()
    tokens = torch.randint(0, 97, (6, 24), generator=torch.Generator().manual_seed(1))
    return model, tokens


def test_identity_recovers_everything_and_zero_nothing(tiny_lm):
    model, tokens = tiny_lm
    evaluator = CELossEvaluator(model, HOOK, tokens, batch_size=4)
    perfect = evaluator(lambda act: act)
    assert perfect["ce_spliced"] == pytest.approx(perfect["ce_clean"], rel=1e-6)
    assert perfect["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-6)
    assert perfect["ce_zero"] != pytest.approx(perfect["ce_clean"])
    assert evaluator(torch.zeros_like)["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-6)
    noisy = ce_loss_recovered(model, HOOK, tokens, lambda act: act + 0.5 * torch.randn_like(act))
    assert noisy["ce_loss_recovered"] < 1.0


def test_kl_is_zero_for_a_perfect_reconstruction_and_positive_otherwise(tiny_lm):
    model, tokens = tiny_lm
    evaluator = CELossEvaluator(model, HOOK, tokens, batch_size=4)
    assert evaluator(lambda act: act)["kl_divergence"] == 0.0
    noisy = evaluator(lambda act: act + 0.5 * torch.randn_like(act))["kl_divergence"]
    assert noisy > 1e-4


def test_kl_is_the_mean_per_token_divergence_from_the_clean_distribution(tiny_lm):
    model, tokens = tiny_lm
    mask = torch.ones_like(tokens)
    mask[0, 15:] = 0  # a padded row: its padding predicts nothing and is predicted by nothing
    shift = torch.randn(32, generator=torch.Generator().manual_seed(2))
    replace = lambda act: act + shift  # noqa: E731
    with torch.no_grad():
        clean = torch.log_softmax(model(tokens, attention_mask=mask).logits, -1)
        with patch_activation(model, HOOK, replace):
            spliced = torch.log_softmax(model(tokens, attention_mask=mask).logits, -1)
    per_token = (clean.exp() * (clean - spliced)).sum(-1)[:, :-1]  # position t predicts token t + 1
    real = (mask[:, 1:] * mask[:, :-1]).bool()
    expected = float(per_token[real].mean())
    cached = CELossEvaluator(model, HOOK, tokens, mask, batch_size=4)(replace)
    recomputed = CELossEvaluator(model, HOOK, tokens, mask, batch_size=4, clean_cache_bytes=0)(replace)
    assert cached["kl_divergence"] == pytest.approx(expected, rel=1e-4)
    assert recomputed["kl_divergence"] == pytest.approx(expected, rel=1e-4)  # too big to cache: same answer


def test_clean_ce_is_the_plain_next_token_loss(tiny_lm):
    model, tokens = tiny_lm
    with torch.no_grad():
        expected = float(model(tokens, labels=tokens).loss)  # transformers shifts labels itself
    assert CELossEvaluator(model, HOOK, tokens).cross_entropy() == pytest.approx(expected, rel=1e-5)


def test_trainer_reports_ce_loss_recovered_at_eval_steps(tiny_lm):
    model, tokens = tiny_lm
    acts = capture_activations(model, [HOOK], tokens)[HOOK].reshape(-1, 32)  # 144 tokens
    batches = [acts[i : i + 48] for i in range(0, 144, 48)] * 5
    cfg = TrainingConfig(hook_point=HOOK, architecture="topk", k=8, d_sae=128, batch_size=48, steps=14, lr=3e-3,
                         log_every=4, eval_every=6, checkpoint_every=100, device="cpu")
    reports = []
    Trainer(cfg, on_progress=reports.append, evaluator=CELossEvaluator(model, HOOK, tokens)).train(iter(batches))
    with_ce = [r for r in reports if "ce_loss_recovered" in r]
    assert [r["step"] for r in with_ce] == [6, 12, 14]  # every eval_every steps, and the last one
    for r in with_ce:  # random weights: only the bookkeeping is checked here, semantics above
        gap = r["ce_zero"] - r["ce_clean"]
        assert r["ce_loss_recovered"] == pytest.approx((r["ce_zero"] - r["ce_spliced"]) / gap)
        assert r["kl_divergence"] > 0
    assert with_ce[0]["ce_clean"] == with_ce[1]["ce_clean"] and with_ce[0]["ce_spliced"] != with_ce[1]["ce_spliced"]


def test_encoders_without_an_lm_head_are_refused(tiny_lm):
    model, tokens = tiny_lm
    with pytest.raises(InvalidInput) as info:
        CELossEvaluator(model.transformer, HOOK, tokens)
    assert info.value.field == "model"
