"""Many SAEs on one activation pass (sae/multi.py): each member trains to the weights of its own
single run on the same data, every member resumes after a stop or a crash between checkpoints,
and members that could not share one stream are refused naming the member and the field."""

from __future__ import annotations

import pytest
import torch

from mistudio.errors import InvalidInput
from mistudio.sae import CommitRefused, SyntheticFeatures, Trainer, TrainingConfig, list_checkpoints
from mistudio.sae.export import load_sae
from mistudio.sae.multi import Member, train_and_export_many

HOOK = "blocks.0.hook_resid_post"
SHARED = dict(hook_point=HOOK, batch_size=32, steps=24, log_every=5, checkpoint_every=8, device="cpu",
              lr_warmup_steps=4, lr_decay_steps=6, sparsity_warmup_steps=5, dead_window_tokens=96)
# Two members as different as a sweep gets on one hook point: architecture, width, k/L1, lr, seed.
MEMBERS = (dict(architecture="topk", k=4, d_sae=96, lr=3e-3, seed=7),
           dict(architecture="relu", l1_coefficient=2.0, d_sae=48, lr=1e-3, seed=11))


def configs(**kw) -> list[TrainingConfig]:
    return [TrainingConfig(**{**SHARED, **member, **kw}) for member in MEMBERS]


def data():
    return SyntheticFeatures(n_features=48, d=24, batch_size=32, seed=1)


def single_runs(tmp_path, cfgs) -> list[Trainer]:
    trainers = []
    for i, cfg in enumerate(cfgs):
        trainer = Trainer(cfg, tmp_path / f"single{i}")
        trainer.train(data())  # each single run reads its own copy of the same stream
        trainers.append(trainer)
    return trainers


def assert_same_weights(trainer: Trainer, run_dir):
    exported = load_sae(run_dir / "sae")
    reference = trainer.inference_sae()
    for (name, p), q in zip(reference.state_dict().items(), exported.state_dict().values()):
        assert torch.equal(p, q), name


def test_a_sweep_trains_each_member_to_the_weights_of_its_single_run(tmp_path):
    cfgs = configs()
    singles = single_runs(tmp_path, cfgs)
    reports = [[], []]
    members = [Member(cfg, tmp_path / f"m{i}", on_progress=reports[i].append) for i, cfg in enumerate(cfgs)]
    results = train_and_export_many(members, {HOOK: data()})
    for i, (single, result) in enumerate(zip(singles, results)):
        assert result["stopped"] is False and result["step"] == 24
        assert_same_weights(single, tmp_path / f"m{i}")
        assert result["explained_variance"] == single.last_metrics["explained_variance"]
        assert [r["step"] for r in reports[i]] == [5, 10, 15, 20, 24]
        assert (tmp_path / f"m{i}" / "metrics.jsonl").read_text().count("\n") == 5
        assert result["peak_rss_mb"] > 0


def test_a_stopped_sweep_resumes_every_member_to_the_same_weights(tmp_path):
    cfgs = configs()
    singles = single_runs(tmp_path, cfgs)
    members = [Member(cfg, tmp_path / f"m{i}") for i, cfg in enumerate(cfgs)]
    steps = []
    stopped = train_and_export_many(members, {HOOK: data()}, should_stop=lambda: len(steps) >= 19,
                                    on_step=steps.append)
    assert all(r["stopped"] for r in stopped)
    assert [list_checkpoints(m.run_dir)[-1].name for m in members] == ["step_000000016"] * 2
    assert not (tmp_path / "m0" / "sae").exists()
    results = train_and_export_many(members, {HOOK: data()})  # a fresh stream: seeked from the checkpoints
    assert [r["step"] for r in results] == [24, 24]
    for i, single in enumerate(singles):
        assert_same_weights(single, tmp_path / f"m{i}")
        assert [int(line.split('"step": ')[1].split(",")[0]) for line in
                (tmp_path / f"m{i}" / "metrics.jsonl").read_text().splitlines()] == [5, 10, 15, 20, 24]


def test_a_crash_between_two_members_checkpoints_resumes_both_from_the_step_they_share(tmp_path):
    cfgs = configs()
    singles = single_runs(tmp_path, cfgs)
    members = [Member(cfg, tmp_path / f"m{i}") for i, cfg in enumerate(cfgs)]
    commits = []

    def die_on_the_second_members_step_16(step):  # member 0 commits step 16, then the "crash"
        commits.append(step)
        return not (step == 16 and commits.count(16) == 2)

    with pytest.raises(CommitRefused):
        train_and_export_many(members, {HOOK: data()}, before_commit=die_on_the_second_members_step_16)
    assert list_checkpoints(tmp_path / "m0")[-1].name == "step_000000016"
    assert list_checkpoints(tmp_path / "m1")[-1].name == "step_000000008"
    results = train_and_export_many(members, {HOOK: data()})
    assert [r["step"] for r in results] == [24, 24]
    for i, single in enumerate(singles):
        assert_same_weights(single, tmp_path / f"m{i}")


def test_a_finished_sweep_run_again_only_exports(tmp_path):
    members = [Member(cfg, tmp_path / f"m{i}") for i, cfg in enumerate(configs())]
    first = train_and_export_many(members, {HOOK: data()})
    again = train_and_export_many(members, {HOOK: data()})
    assert [r["step"] for r in again] == [24, 24]
    assert [r["explained_variance"] for r in again] == [r["explained_variance"] for r in first]


@pytest.mark.parametrize("field, value", [("batch_size", 64), ("steps", 30), ("checkpoint_every", 4),
                                          ("log_every", 3), ("device", "auto")])
def test_members_that_cannot_share_one_stream_are_refused_naming_member_and_field(tmp_path, field, value):
    cfgs = configs()
    cfgs[1] = TrainingConfig(**{**SHARED, **MEMBERS[1], field: value})
    with pytest.raises(InvalidInput) as err:
        train_and_export_many([Member(cfg, tmp_path / f"m{i}") for i, cfg in enumerate(cfgs)], {HOOK: data()})
    assert err.value.field == f"sweep[1].{field}"
    assert "set " + field in err.value.fix


def test_a_sweep_needs_two_checkpoints_kept(tmp_path):
    with pytest.raises(InvalidInput) as err:
        train_and_export_many([Member(cfg, tmp_path / f"m{i}") for i, cfg in enumerate(configs(keep_checkpoints=1))],
                              {HOOK: data()})
    assert err.value.field.endswith(".keep_checkpoints")


def test_members_on_two_hook_points_each_train_on_their_own_stream(tmp_path):
    other = "blocks.1.hook_resid_post"
    cfgs = configs()
    cfgs[1] = TrainingConfig(**{**SHARED, **MEMBERS[1], "hook_point": other})

    def other_data():
        return SyntheticFeatures(n_features=48, d=24, batch_size=32, seed=2)

    single = Trainer(cfgs[1], tmp_path / "single")
    single.train(other_data())
    members = [Member(cfg, tmp_path / f"m{i}") for i, cfg in enumerate(cfgs)]
    train_and_export_many(members, {HOOK: data(), other: other_data()})
    assert_same_weights(single, tmp_path / "m1")
    with pytest.raises(InvalidInput) as err:
        train_and_export_many(members, {HOOK: data()})
    assert err.value.field == "streams" and other in err.value.problem
