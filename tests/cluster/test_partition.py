"""A worker host cut off from the network (`ip link set eth0 down`) for longer than the lease
while its training is mid-way (each host's delivery is held at a checkpoint commit, so the machine's speed does not matter): it stops its job on its own (its renewals fail), a late commit with its stale
delivery's lease and GPU token once the link is back is refused, the job completes exactly
once on the other host, and the heartbeats show the cut-off host gone, then back."""

from __future__ import annotations

import json
from dataclasses import replace
import sys
import time
from pathlib import Path

import pytest

from helpers import wait_for
from rig import (HEARTBEAT_TTL, LEADER_TTL, LEASE, REAP_INTERVAL, assert_one_leader_per_term,
                 begin_training, checkpoints, start_held_worker)

from mistudio import events
from mistudio.coord import locks
from mistudio.queue.worker import CHILD_STOP_GRACE
from mistudio.redis.connection import command_timeout, get_client
from mistudio.settings import get_settings

pytestmark = pytest.mark.timeout(420)

LATE_COMMIT = Path(__file__).with_name("late_commit.py")
SLACK = 5.0  # seconds of scheduling on a loaded 2-core machine
CUT = 2 * LEASE  # the link stays down at least this long: well past the lease


def child_running(host) -> bool:
    return any("mistudio.queue.child" in command for command in host.commands())


def test_a_cut_off_host_stops_on_its_own_and_its_late_commit_is_refused(make_cluster):
    cluster = make_cluster()
    a, b = cluster.workers["jetson-a"], cluster.workers["jetson-b"]
    leaders, watcher, job_id, channel = begin_training(cluster)
    wait_for(lambda: checkpoints(channel) == [10], timeout=30, message="step 10's checkpoint event")
    stale = cluster.record(job_id)
    gpu = locks.holder(get_client("locks"), "jetson-a")
    assert stale["worker"].startswith("jetson-a:") and stale["attempts"] == 1 and gpu is not None
    # jetson-b starts the run over (no shared store): held at its own step-20 commit, so the job is
    # still running there, under its new lease, when jetson-a's late commit is tried.
    hold_b = start_held_worker(cluster, "jetson-b", "pause-b")

    cut_at = time.monotonic()
    a.link_down()
    wait_for(lambda: "jetson-a" not in cluster.devices_beating(), timeout=HEARTBEAT_TTL + 10,
             message="jetson-a gone from the heartbeats")
    # On its own, with no one to tell it: its renewals fail and its job process ends, link still down.
    wait_for(lambda: not child_running(a), timeout=LEASE + 30, message="jetson-a to stop its job")
    stopped_after = time.monotonic() - cut_at
    # Bounded: a renewal hung on the dead link fails after command_timeout, then the job gets its grace.
    assert stopped_after <= LEASE + command_timeout(replace(get_settings(), lease_seconds=LEASE)) + CHILD_STOP_GRACE + SLACK, stopped_after
    assert "stopping (lease_lost)" in a.log("worker-gpu")
    redelivered = wait_for(lambda: (r := cluster.record(job_id)) and r["attempts"] == 2 and r["state"] == "running"
                           and r, timeout=LEASE + LEADER_TTL + REAP_INTERVAL + 30, message="the job on jetson-b")
    assert redelivered["worker"].startswith("jetson-b:"), redelivered
    wait_for(lambda: (hold_b / "paused").exists(), timeout=120, message="the job held on jetson-b")
    time.sleep(max(0.0, CUT - (time.monotonic() - cut_at)))
    assert "jetson-a" not in cluster.devices_beating()
    a.link_up()
    wait_for(lambda: "jetson-a" in cluster.devices_beating(), timeout=30, message="jetson-a back in the heartbeats")

    # The late commit of jetson-a's delivery, from jetson-a, over the restored link: refused by both fences.
    late = a.run_once([sys.executable, str(LATE_COMMIT), job_id, stale["lease"], "1"],
                      cluster.env(a, MISTUDIO_GPU_DEVICE="jetson-a", MISTUDIO_GPU_FENCE=gpu["fence"]))
    assert late.returncode == 0, late.stderr
    answer = json.loads(late.stdout.strip().splitlines()[-1])
    assert answer == {"lease_valid": False, "gpu_fence_valid": False, "commit_allowed": False,
                      "stop_reason": "lease_lost"}, answer
    assert cluster.record(job_id)["state"] == "running"  # jetson-b's delivery, untouched by it
    (hold_b / "resume").write_text("")

    assert watcher.wait(300) == 0, cluster.client.log("train")
    record = cluster.record(job_id)
    assert (record["state"], record["attempts"]) == ("succeeded", 2), record
    assert record["worker"].startswith("jetson-b:")
    assert [e.type for e in events.history(channel)].count("training.completed") == 1
    # Exactly once, on jetson-b: jetson-a exported nothing.
    assert (b.home / "runs" / job_id / "sae" / "cfg.json").is_file()
    assert not (a.home / "runs" / job_id / "sae").exists()
    assert "jetson-a" in cluster.devices_beating()  # and it stays, idle, ready for the next job

    claimed = assert_one_leader_per_term(leaders, [a, b])
    print(json.dumps({"job_stopped_after_cut_s": round(stopped_after, 2), "terms": {t: sorted(n) for t, n in claimed.items()}}))
