"""Devices that share a run store (a folder every device mounts, e.g. NFS; here one folder
bound into every host): a training whose host dies resumes on the other host from the
checkpoint the dead one wrote, and feature extraction and the report find the run there."""

from __future__ import annotations

import json
import re

import pytest

from helpers import wait_for
from rig import assert_one_leader_per_term, begin_training, checkpoints, training_steps

from mistudio import events, runs

pytestmark = pytest.mark.timeout(480)


def test_a_redelivered_training_resumes_from_the_lost_hosts_checkpoint_in_the_shared_store(make_cluster):
    cluster = make_cluster(shared_store=True)
    a, b = cluster.workers["jetson-a"], cluster.workers["jetson-b"]
    leaders, watcher, job_id, channel = begin_training(cluster)
    first = wait_for(lambda: checkpoints(channel), timeout=30, message="step 10's checkpoint event")[0]
    assert first == 10
    cluster.start_worker("jetson-b")
    killed_seq = events.latest(channel).seq
    a.kill_all()

    assert watcher.wait(300) == 0, cluster.client.log("train")
    record = cluster.record(job_id)
    assert (record["state"], record["attempts"]) == ("succeeded", 2), record
    assert record["worker"].startswith("jetson-b:")
    resumed = re.fullmatch(r"resumed from step (\d+) on device jetson-b \(written by device jetson-a\)",
                           record["resume_note"] or "")
    assert resumed, record["resume_note"]
    step = int(resumed.group(1))
    assert step >= first
    assert min(training_steps(channel, after_seq=killed_seq)) > first  # resumed, not from step 0

    # One run, on the file server's disk, written by both devices; nothing in their local stores,
    # nothing at the mount point outside the hosts.
    run = runs.RunFolder(cluster.store_export / job_id)
    assert run.exported()
    assert [(w["device"], w["from_step"]) for w in run.read_info()["written_by"]] == [("jetson-a", 0), ("jetson-b", step)]
    assert not (a.home / "runs").exists() and not (b.home / "runs").exists()
    assert list(cluster.store_mount.iterdir()) == []

    # Analysis finds the run where it is: extraction on jetson-b (the one worker left), the report on the client.
    extracted = cluster.cli(cluster.client, "features", job_id, "--json", "--wait", timeout=400)
    assert extracted.returncode == 0, extracted.stderr[-3000:]
    assert (run.features / runs.FEATURE_TABLE).is_file()
    report = cluster.cli(cluster.client, "report", job_id, timeout=120)
    assert report.returncode == 0, report.stderr[-3000:]
    assert report.stdout.strip() == str(cluster.store_mount / job_id / "report.html") and run.report.is_file()

    claimed = assert_one_leader_per_term(leaders, [a, b])
    print(json.dumps({"resumed_from_step": step, "first_checkpoint": first, "terms": {t: sorted(n) for t, n in claimed.items()}}))
