"""The train_sae job: configs checked before queueing, a real run on a gpu worker, and a
redelivered job that resumes from its checkpoint instead of starting over."""

from __future__ import annotations

import json
import signal

import pytest

from helpers import run_cli, wait_for
from mistudio import events, jobs
from mistudio.errors import InvalidInput
from mistudio.redis import keys
from mistudio.settings import get_settings

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize(
    "params, field",
    [
        ({"architecture": "sparsemax"}, "architecture"),
        ({"k": 100000}, "k"),
        ({"lr": 0}, "lr"),
        ({"lr": -1e-3}, "lr"),
        ({"model": "/no/such/model"}, "model"),
        ({"layer": 17}, "layer"),
        ({"hook_point": "blocks.2.hook_banana"}, "hook_point"),
        ({"dataset": "/no/such/corpus.txt"}, "dataset"),
        ({"batch_size": 0}, "batch_size"),
        ({"architecture": "relu", "k": 8}, "k"),
    ],
)
def test_invalid_configs_are_rejected_before_queueing(redis_db, params, field):
    with pytest.raises(InvalidInput) as info:
        jobs.submit("train_sae", params)
    assert info.value.field == field, str(info.value)
    assert redis_db("results").zcard(keys.jobs_index()) == 0


def test_the_defaults_are_the_bundled_model_middle_layer_topk(redis_db):
    job = jobs.submit("train_sae", {})
    params = job.record()["params"]
    assert params["model"] is None and params["hook_point"] == "blocks.3.hook_resid_post"
    assert params["architecture"] == "topk" and params["d_in"] == 384
    assert params["d_sae"] == get_settings().profile.expansion_factor * 384
    assert job.id.startswith("tr_") and job.record()["queue"] == "gpu" and job.record()["priority"] == 10


def test_mistudio_train_runs_on_a_gpu_worker_and_reports(workers):
    workers.start("gpu", lease=10)
    result = run_cli("train", "--steps", "30", "--json", "--wait", timeout=240)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["state"] == "succeeded", out
    final = out["result"]["final_metrics"]
    assert final["step"] == 30 and 0 < final["explained_variance"] <= 1 and final["l0"] > 0
    sae_dir = get_settings().runs_dir / out["training_id"] / "sae"
    assert (sae_dir / "cfg.json").is_file() and (sae_dir / "sae_weights.safetensors").is_file()
    history = events.history(keys.training_channel(out["training_id"]))
    types = [e.type for e in history]
    assert "training.progress" in types and types[-1] == "training.completed"
    assert [e.seq for e in history] == sorted(e.seq for e in history)


def test_a_redelivered_training_resumes_from_its_checkpoint(workers):
    first = workers.start("gpu", lease=3)
    job = jobs.submit("train_sae", {"steps": 120, "checkpoint_every": 20, "log_every": 5})
    channel = keys.training_channel(job.id)
    checkpoint = wait_for(lambda: next((e for e in events.history(channel) if e.type == "training.checkpoint"), None),
                          timeout=180, message="a first checkpoint")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed_at = events.latest(channel).seq

    workers.start("gpu", lease=3)
    result = job.result(timeout=240)
    assert job.record()["attempts"] == 2
    assert result["final_metrics"]["step"] == 120
    after = [e for e in events.history(channel, after_seq=killed_at)
             if e.type == "training.progress" and e.data.get("phase") == "training"]
    assert after, "the second attempt reported no training progress"
    assert min(e.data["step"] for e in after) > checkpoint.data["step"]  # resumed, not restarted


def test_a_cancelled_training_ends_its_channel_with_training_stopped(workers):
    """As a stopped extraction does: followers (monitor, `mistudio train --wait`) see the end."""
    workers.start("gpu", lease=10)
    job = jobs.submit("train_sae", {"steps": 100_000, "log_every": 5})
    channel = keys.training_channel(job.id)
    wait_for(lambda: any(isinstance(e.payload, events.TrainingProgress) and e.payload.phase == "training"
                         for e in events.history(channel)), timeout=180, message="training steps")
    assert job.cancel()
    wait_for(lambda: job.status() == "cancelled", timeout=120, message="the job cancelled")
    last = wait_for(lambda: events.latest(channel) if events.latest(channel).terminal else None, timeout=30,
                    message="a terminal event")
    assert last.type == "training.stopped" and last.payload.reason == "cancelled"
    assert 0 < last.payload.step < 100_000
    assert [e.type for e in events.history(channel)].count("training.stopped") == 1
