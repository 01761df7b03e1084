"""A sweep: one train_sae job trains many SAEs on one activation pass. Its members are checked
before anything is queued (errors name the member and field), each member gets a run folder,
checkpoints and an export of its own, progress carries every member, a killed worker's
redelivery resumes every member, and a member trains to the weights of its own single run."""

from __future__ import annotations

import signal

import pytest
import torch
from safetensors.torch import load_file

from helpers import wait_for
from mistudio import events, jobs, runs
from mistudio.errors import InvalidInput
from mistudio.redis import keys
from mistudio.sae.checkpoint import list_checkpoints
from mistudio.settings import get_settings
from mistudio.training import prepare_and_train, prepare_and_train_sweep, prepare_config, prepare_sweep

pytestmark = pytest.mark.timeout(400)


@pytest.mark.parametrize("params, field", [
    ({"sweep": [{"k": 8}, {"k": 100_000}]}, "sweep[1].k"),
    ({"sweep": [{"k": 8}, {"batch_size": 256}]}, "sweep[1].batch_size"),
    ({"sweep": [{"k": 8}, {"architecture": "relu", "k": 8}]}, "sweep[1].k"),
    ({"sweep": [{"k": 8}, {"layer": 17}]}, "sweep[1].layer"),
    ({"sweep": [{"k": 8}, "k=16"]}, "sweep[1]"),
    ({"sweep": []}, "sweep"),
    ({"sweep": [{"k": 8}, {"k": 16}], "keep_checkpoints": 1}, "sweep[0].keep_checkpoints"),
    ({"sweep": [{"expansion_factor": 16}] * 6, "batch_size": 2048}, "sweep"),  # together over the budget
])
def test_a_bad_member_is_refused_before_queueing_naming_member_and_field(redis_db, params, field):
    with pytest.raises(InvalidInput) as info:
        jobs.submit("train_sae", params)
    assert info.value.field == field, str(info.value)
    assert info.value.fix
    assert redis_db("results").zcard(keys.jobs_index()) == 0


def test_a_sweep_job_validates_to_itself_with_every_member_whole(redis_db):
    job = jobs.submit("train_sae", {"steps": 30, "sweep": [{"k": 8}, {"k": 16, "expansion_factor": 8},
                                                            {"layer": 2}]})
    members = job.record()["params"]["sweep"]
    assert [(m["k"], m["d_sae"], m["hook_point"]) for m in members] == [
        (8, 1536, "blocks.3.hook_resid_post"), (16, 3072, "blocks.3.hook_resid_post"),
        (16, 1536, "blocks.2.hook_resid_post")]
    assert all(m["steps"] == 30 for m in members)


def _weights(folder) -> dict:
    return load_file(folder / "sae" / "sae_weights.safetensors")


def test_a_sweep_trains_two_configs_to_the_weights_of_two_single_runs(redis_db, tmp_path):
    shared = {"steps": 30, "checkpoint_every": 10, "log_every": 5, "device": "cpu"}
    members = [{"k": 8, "seed": 1}, {"architecture": "relu", "l1_coefficient": 1.0, "lr": 1e-3, "seed": 1}]
    configs = prepare_sweep({**shared, "sweep": members})
    reports = []
    results = prepare_and_train_sweep(configs, [tmp_path / "a", tmp_path / "b"], evaluate=False,
                                      member_progress=lambda i, m: reports.append((i, m["step"])))
    assert [r["step"] for r in results] == [30, 30]
    assert reports[:2] == [(0, 5), (1, 5)]
    for i, member in enumerate(members):
        single = prepare_config({**shared, **member})
        prepare_and_train(single, tmp_path / f"single{i}", evaluate=False)
        one, many = _weights(tmp_path / f"single{i}"), _weights(tmp_path / "ab"[i])
        assert one.keys() == many.keys()
        for name in one:
            assert torch.equal(one[name], many[name]), (i, name)


def test_a_killed_sweep_resumes_every_member_and_reports_them_together(workers):
    first = workers.start("gpu", lease=3)
    job = jobs.submit("train_sae", {"steps": 120, "checkpoint_every": 20, "log_every": 5,
                                    "sweep": [{"k": 8}, {"k": 16, "expansion_factor": 8}]})
    channel = keys.training_channel(job.id)
    checkpoint = wait_for(lambda: next((e for e in events.history(channel) if e.type == "training.checkpoint"
                                        and e.payload.member == 1), None), timeout=240,
                          message="both members' first checkpoint")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed_at = events.latest(channel).seq

    workers.start("gpu", lease=3)
    result = job.result(timeout=300)
    record = job.record()
    assert record["attempts"] == 2
    # Its record says where it resumed, as a single training's does (the newest step both members have).
    device = get_settings().device_id
    assert record["resume_note"] == result["resume_note"] and result["device"] == device
    assert record["resume_note"].startswith("resumed from step ") and f"on device {device}" in record["resume_note"]
    assert int(record["resume_note"].split()[3]) >= checkpoint.payload.step
    assert record["checkpoint_device"] == device and record["checkpoint_step"] == 120
    ids = [f"{job.id}-m0", f"{job.id}-m1"]
    assert [m["training_id"] for m in result["members"]] == ids
    assert [m["final_metrics"]["step"] for m in result["members"]] == [120, 120]
    assert result["members"][0]["final_metrics"]["l0"] == pytest.approx(8)
    assert result["members"][1]["final_metrics"]["l0"] == pytest.approx(16)
    assert [m["label"] for m in result["members"]] == ["d_sae=1536 k=8", "d_sae=3072 k=16"]
    assert result["final_metrics"]["peak_rss_mb"] > 100 and result["final_metrics"]["members"] == 2
    for tid in ids:
        folder = runs.existing(tid)
        assert folder.exported() and folder.read_info()["sweep_members"] == ids
        assert list_checkpoints(folder.path)[-1].name == "step_000000120"
    after = [e.payload for e in events.history(channel, after_seq=killed_at)
             if e.type == "training.progress" and e.payload.phase == "training"]
    assert after, "the second attempt reported no training progress"
    assert min(p.step for p in after) > checkpoint.payload.step  # resumed, not restarted
    assert all([m["training_id"] for m in p.members] == ids for p in after)
    assert all(set(m["metrics"]) >= {"loss", "explained_variance", "l0"} for p in after for m in p.members)
    last = events.latest(channel)
    assert last.type == "training.completed" and [m["sae_path"] for m in last.payload.members] == [
        str(runs.for_training(tid).export) for tid in ids]
