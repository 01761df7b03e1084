"""A worker host dies mid-training (every process of it SIGKILLed at once, as a power cut):
its job runs again on the other host within one lease, the leader it was is replaced
within the leader TTL, and no term ever has two leaders. Each host has only its own disk, so
the other host trains from step 0, and the job record says why."""

from __future__ import annotations

import json
import time

import pytest

from helpers import wait_for
from mistudio.runs import RunFolder
from rig import (HEARTBEAT_TTL, LEADER_TTL, LEASE, REAP_INTERVAL, assert_one_leader_per_term,
                 begin_training, checkpoints)

from mistudio import events

pytestmark = pytest.mark.timeout(420)

SLACK = 3.0  # seconds of scheduling on a loaded 2-core machine, beside the protocol's own bounds


def test_a_dead_hosts_training_runs_again_on_the_other_host_and_its_leadership_moves(make_cluster):
    cluster = make_cluster()
    a, b = cluster.workers["jetson-a"], cluster.workers["jetson-b"]
    leaders, watcher, job_id, channel = begin_training(cluster)
    wait_for(lambda: checkpoints(channel) == [10], timeout=30, message="step 10's checkpoint event")
    assert cluster.record(job_id)["worker"].startswith("jetson-a:")
    cluster.start_worker("jetson-b")

    killed_seq = events.latest(channel).seq
    killed_at = time.time()
    a.kill_all()
    assert a.pids() == []

    # The job runs again on jetson-b within one lease (plus one reaper round) of the death.
    record = wait_for(lambda: (r := cluster.record(job_id)) and r["attempts"] == 2 and r["state"] == "running" and r,
                      timeout=LEASE + REAP_INTERVAL + 30, message="the second delivery")
    assert record["worker"].startswith("jetson-b:"), record
    assert record["started_at"] - killed_at <= LEASE + REAP_INTERVAL + SLACK, record["started_at"] - killed_at

    # jetson-b leads within the leader TTL (plus one campaign round, a third of it).
    took_over = wait_for(lambda: leaders.first_time("jetson-b"), timeout=LEADER_TTL + 30, message="a new leader")
    assert took_over - killed_at <= LEADER_TTL * 4 / 3 + SLACK, took_over - killed_at
    wait_for(lambda: "jetson-a" not in cluster.devices_beating(), timeout=HEARTBEAT_TTL + 10,
             message="jetson-a gone from the heartbeats")

    # The client that submitted and watched sees one success.
    assert watcher.wait(300) == 0, cluster.client.log("train")
    assert '"state": "succeeded"' in cluster.client.log("train")
    record = cluster.record(job_id)
    assert (record["state"], record["attempts"]) == ("succeeded", 2), record
    assert record["worker"].startswith("jetson-b:")
    assert [e.type for e in events.history(channel)].count("training.completed") == 1

    # No shared run store: jetson-b had no checkpoint of jetson-a's, so it trained from the start,
    # and the run's folder (with the exported SAE) is on jetson-b's disk; jetson-a's holds its checkpoints.
    # Steps before jetson-a's first checkpoint were trained again: read from the run's metrics.jsonl
    # (every report; the channel's progress events are coalesced, so their first step varies).
    run_b, run_a = b.home / "runs" / job_id, a.home / "runs" / job_id
    steps_b = [json.loads(line)["step"] for line in RunFolder(run_b).metrics.read_text().splitlines()]
    assert min(steps_b) < min(checkpoints(channel))
    note = record["resume_note"]
    assert note.startswith("restarted from step 0 on device jetson-b: device jetson-a's checkpoint at step "), note
    assert "run store is local" in note and "set MISTUDIO_RUN_STORE to a path every device mounts" in note, note
    assert (run_b / "sae" / "cfg.json").is_file()
    assert not (run_a / "sae").exists() and any((run_a / "checkpoints").iterdir())

    claimed = assert_one_leader_per_term(leaders, [a, b])
    print(json.dumps({"requeued_after_s": round(record["started_at"] - killed_at, 2),
                      "new_leader_after_s": round(took_over - killed_at, 2), "terms": {t: sorted(n) for t, n in claimed.items()}}))
