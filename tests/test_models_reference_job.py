"""The build_reference_model job: refused before queueing on bad input, built by a real gpu worker
with its loss curve on the training channel, loadable afterwards, and not rebuilt when asked again."""

from __future__ import annotations

import json
import shutil

import pytest

from helpers import run_cli
from mistudio import events, jobs
from mistudio.errors import InvalidInput
from mistudio.models import load_model
from mistudio.models.folders import REFERENCE_NAME, reference_model_path
from mistudio.redis import keys

pytestmark = pytest.mark.timeout(600)  # a whole build in a worker, on a shared 2-core CPU


@pytest.mark.parametrize("params, field", [
    ({"steps": 0}, "steps"),
    ({"n_embd": 100, "n_head": 3}, "n_head"),
    ({"device": "tpu"}, "device"),
    ({"rebuild": "yes"}, "rebuild"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_settings_are_refused_before_queueing(redis_db, params, field):
    with pytest.raises(InvalidInput) as info:
        jobs.submit("build_reference_model", params)
    assert info.value.field == field, str(info.value)
    assert redis_db("results").zcard(keys.jobs_index()) == 0


@pytest.fixture
def no_reference_model():
    """The session's MISTUDIO_HOME without a reference LM, before and after (other tests never see this one)."""
    shutil.rmtree(reference_model_path(), ignore_errors=True)
    yield reference_model_path()
    shutil.rmtree(reference_model_path(), ignore_errors=True)


def test_the_job_trains_it_on_a_gpu_worker_with_its_loss_curve_live(workers, no_reference_model):
    workers.start("gpu", lease=10)
    result = run_cli("models", "build-reference", "--steps", "20", "--json", "--wait", timeout=240)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["state"] == "succeeded", out
    built = out["result"]
    assert built["model"] == REFERENCE_NAME and not built["already_built"]
    assert 0 < built["heldout_loss"] < 7.0 and built["heldout_perplexity"] > 1
    assert built["path"] == str(no_reference_model)

    history = events.history(keys.training_channel(out["job_id"]))
    curve = [e.payload for e in history if e.type == "training.progress" and e.payload.phase == "training"]
    assert curve and curve[-1].total_steps == 20 and "loss" in curve[-1].metrics
    assert [p.step for p in curve] == sorted(p.step for p in curve)
    assert history[-1].type == "training.completed"
    assert history[-1].payload.final_metrics["heldout_loss"] == built["heldout_loss"]

    loaded = load_model(built["path"])
    assert loaded.metadata["has_lm_head"] and loaded.metadata["model_type"] == "gpt2"

    again = jobs.submit("build_reference_model", {"steps": 20}).result(timeout=60)
    assert again["already_built"] and again["heldout_loss"] == built["heldout_loss"]
