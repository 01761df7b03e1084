"""The job queue: at-least-once delivery with leases, priorities, per-queue concurrency,
job records, cancellation, time limits, dead letters. Real redis-server, real worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import wait_for
from mistudio import jobs
from mistudio.errors import InvalidInput
from mistudio.queue import records
from mistudio.redis import keys

pytestmark = pytest.mark.timeout(120)


def _state(job):
    return job.record()["state"]


def _running(job):
    return _state(job) == "running"


# --- delivery guarantees -------------------------------------------------------------


def test_a_job_whose_worker_is_killed_runs_again_after_its_lease_expires(workers):
    first = workers.start("cpu", lease=2)
    job = jobs.submit("diagnostics.sleep", {"seconds": 3})
    wait_for(lambda: _running(job), message="job running")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert _state(job) == "running"  # nobody knows yet: the lease is still valid

    workers.start("cpu", lease=2)
    result = job.result(timeout=60)
    assert job.record()["attempts"] == 2
    assert result["attempt"] == 2
    assert job.status() == "succeeded"


def test_sigterm_gives_the_job_back_at_once(workers):
    first = workers.start("cpu", lease=60)  # a long lease: waiting for it would time the test out
    job = jobs.submit("diagnostics.sleep", {"seconds": 2})
    wait_for(lambda: _running(job), message="job running")
    stopped_at = time.monotonic()
    first.send_signal(signal.SIGTERM)
    assert first.wait(15) == 0
    wait_for(lambda: _state(job) == "queued", timeout=5, message="job back on the queue")
    assert "worker was stopped" in job.record()["note"]

    workers.start("cpu", lease=60)
    job.result(timeout=30)
    assert time.monotonic() - stopped_at < 30
    assert job.record()["attempts"] == 2


def test_sigint_also_gives_the_job_back(workers):
    first = workers.start("io", lease=60)
    job = jobs.submit("diagnostics.sleep", {"seconds": 2}, queue="io")
    wait_for(lambda: _running(job), message="job running")
    first.send_signal(signal.SIGINT)
    first.wait(15)
    wait_for(lambda: _state(job) == "queued", timeout=5, message="job back on the queue")


def test_redis_crash_between_submit_and_pickup_loses_no_job(tmp_path, monkeypatch):
    """A private server: killed with SIGKILL (no save) after submit, restarted, then the worker runs."""
    from mistudio.redis import server
    from mistudio.redis.connection import reset_pools

    monkeypatch.setenv("MISTUDIO_HOME", str(tmp_path / "home"))
    reset_pools()
    state = server.start()
    submitted = [jobs.submit("diagnostics.echo", {"n": i}) for i in range(5)]
    time.sleep(1.5)  # appendfsync everysec: what was acknowledged over a second ago is on disk
    os.kill(state["pid"], signal.SIGKILL)
    wait_for(lambda: server.read_state() is None, message="redis gone")
    server.start()
    reset_pools()
    worker = subprocess.Popen([sys.executable, "-m", "mistudio.cli", "worker", "--queue", "cpu"],
                              env={**os.environ, "MISTUDIO_LEASE_SECONDS": "3"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for i, job in enumerate(submitted):
            assert job.result(timeout=60)["params"] == {"n": i}
    finally:
        worker.kill()
        worker.wait()
        server.stop()
        reset_pools()


# --- ordering and concurrency ----------------------------------------------------------


def test_higher_priority_first_and_fifo_within_a_priority(workers):
    low = [jobs.submit("diagnostics.echo", {"name": f"low{i}"}, priority=1) for i in range(3)]
    high = [jobs.submit("diagnostics.echo", {"name": f"high{i}"}, priority=9) for i in range(3)]
    mid = jobs.submit("diagnostics.echo", {"name": "mid"}, priority=5)
    workers.start("cpu")  # one thread: strictly one at a time
    order = sorted(high + [mid] + low, key=lambda j: j.result(timeout=30)["started"])
    assert [j.result()["params"]["name"] for j in order] == ["high0", "high1", "high2", "mid", "low0", "low1", "low2"]


def _intervals(job_list):
    return [(r["started"], r["finished"]) for r in (j.result(timeout=90) for j in job_list)]


def _overlaps(intervals):
    intervals = sorted(intervals)
    return any(b[0] < a[1] for a, b in zip(intervals, intervals[1:]))


def test_never_two_gpu_jobs_at_once_while_io_jobs_overlap(workers):
    workers.start("gpu")
    workers.start("io")
    gpu_jobs = [jobs.submit("diagnostics.sleep", {"seconds": 1.0}, queue="gpu") for _ in range(3)]
    io_jobs = [jobs.submit("diagnostics.sleep", {"seconds": 1.5}, queue="io") for _ in range(2)]
    assert _overlaps(_intervals(io_jobs))
    assert not _overlaps(_intervals(gpu_jobs))
    # gpu jobs ran in spawned child processes, not in the worker
    assert len({j.result()["pid"] for j in gpu_jobs}) == 3


# --- records, messages, input -----------------------------------------------------------


def test_the_raw_queue_message_is_json(redis_db):
    job = jobs.submit("diagnostics.echo", {"text": "hello"})
    raw = redis_db("queue", decode_responses=False).zrange(keys.queue_pending("cpu"), 0, -1)
    assert len(raw) == 1
    message = json.loads(raw[0])
    assert message["id"] == job.id
    assert message["__message__"]["args"] == [job.id, {"text": "hello"}]
    assert b"\x80" not in raw[0]  # no pickle opcodes


def test_a_job_record_outlives_the_process_that_submitted_it(workers):
    code = "from mistudio import jobs; print(jobs.submit('diagnostics.echo', {'from': 'child'}).id)"
    job_id = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    job = jobs.get_job(job_id)  # a new process (think: a restarted kernel) finds it by id
    assert job.status() == "queued"
    workers.start("cpu")
    assert job.result(timeout=30)["params"] == {"from": "child"}
    record = job.record()
    assert record["task"] == "diagnostics.echo" and record["queue"] == "cpu" and record["attempts"] == 1
    assert record["created_at"] <= record["started_at"] <= record["finished_at"]
    assert record["worker"].endswith(":cpu:" + str(workers.procs[0].pid))


def test_record_ttls_follow_the_seed(workers):
    workers.start("cpu")
    job = jobs.submit("diagnostics.sleep", {"seconds": 0.6})
    job.result(timeout=30)
    client = job._results
    assert 86400 - 5 < client.ttl(keys.job_result(job.id)) <= 86400
    assert 86400 - 5 < client.ttl(keys.job(job.id)) <= 86400
    assert 3600 - 5 < client.ttl(keys.job_progress(job.id)) <= 3600


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda: jobs.submit("no_such_task"), "task"),
        (lambda: jobs.submit("diagnostics.sleep", {"seconds": -1}), "seconds"),
        (lambda: jobs.submit("diagnostics.echo", {"when": object()}), "params"),
        (lambda: jobs.submit("diagnostics.echo", {"x": float("nan")}), "params"),
        (lambda: jobs.submit("diagnostics.echo", priority=999), "priority"),
        (lambda: jobs.submit("diagnostics.echo", queue="tpu"), "queue"),
        (lambda: jobs.submit("diagnostics.echo", job_id="bad id!"), "job_id"),
        (lambda: jobs.submit("diagnostics.echo", time_limit=0), "time_limit"),
    ],
)
def test_bad_input_is_refused_before_anything_is_queued(redis_db, call, field):
    with pytest.raises(InvalidInput) as info:
        call()
    assert info.value.field == field and "Fix:" in str(info.value)
    assert redis_db("results").zcard(keys.jobs_index()) == 0
    assert all(redis_db("queue").zcard(keys.queue_pending(q)) == 0 for q in ("gpu", "io", "cpu"))


# --- cancel, time limit, failures, dead letters ------------------------------------------


def test_cancelled_before_it_starts_never_runs(workers):
    job = jobs.submit("diagnostics.echo", {"x": 1})
    assert job.cancel()
    workers.start("cpu")
    later = jobs.submit("diagnostics.echo", {"x": 2})
    later.result(timeout=30)  # the worker has been past the cancelled one
    assert job.status() == "cancelled" and job.record()["attempts"] == 0
    with pytest.raises(jobs.JobFailed, match="cancelled"):
        job.result(timeout=1)


@pytest.mark.parametrize("queue", ["cpu", "gpu"])
def test_cancel_stops_a_running_job(workers, queue):
    workers.start(queue)
    job = jobs.submit("diagnostics.sleep", {"seconds": 60}, queue=queue)
    wait_for(lambda: _running(job) and job.progress(), timeout=30, message="job running")
    asked = time.monotonic()
    assert job.cancel()
    wait_for(lambda: _state(job) == "cancelled", timeout=15, message="cancelled")
    assert time.monotonic() - asked < 15
    assert workers.procs[0].poll() is None  # the worker lives on


def test_a_job_past_its_time_limit_fails(workers):
    workers.start("cpu")
    job = jobs.submit("diagnostics.sleep", {"seconds": 30}, time_limit=1)
    with pytest.raises(jobs.JobFailed, match="time limit"):
        job.result(timeout=30)


def test_a_failing_job_records_error_and_traceback_and_can_be_retried(workers):
    workers.start("io")
    job = jobs.submit("diagnostics.fail", {"message": "boom"}, queue="io")
    with pytest.raises(jobs.JobFailed) as info:
        job.result(timeout=30)
    assert "RuntimeError: boom" in str(info.value)
    assert "Traceback" in info.value.traceback and "diagnostics.py" in info.value.traceback
    job.retry()
    with pytest.raises(jobs.JobFailed):
        job.result(timeout=30)
    fine = jobs.submit("diagnostics.echo", queue="io")
    fine.result(timeout=30)
    with pytest.raises(InvalidInput, match="only failed, cancelled or dead"):
        fine.retry()


def test_a_job_that_keeps_losing_its_worker_is_dead_lettered_and_can_be_requeued(workers, monkeypatch):
    """Each delivery is claimed and abandoned (as by a worker that dies); after max attempts it is dead."""
    from mistudio.queue.apps import huey_app
    from mistudio.queue.reaper import reap_once
    from mistudio.settings import get_settings

    monkeypatch.setenv("MISTUDIO_LEASE_SECONDS", "1")
    monkeypatch.setenv("MISTUDIO_MAX_ATTEMPTS", "2")
    storage = huey_app("cpu").storage
    job = jobs.submit("diagnostics.echo", {"x": "doomed"})
    for attempt in (1, 2):
        lease = wait_for(lambda: storage.claim("crashing-worker", block=False), message="claim")
        assert lease.attempt == attempt and lease.job_id == job.id
        time.sleep(1.2)
        reaped = reap_once(get_settings())
        assert [r.outcome for r in reaped] == (["requeued"] if attempt == 1 else ["dead"])
    assert job.status() == "dead"
    assert job.id in storage.dead_job_ids()
    assert storage.counts()["dead"] == 1

    job.retry()
    assert job.status() == "queued" and storage.counts()["dead"] == 0
    workers.start("cpu")
    assert job.result(timeout=30)["params"] == {"x": "doomed"}


def test_a_lost_lease_refuses_commits(redis_db, monkeypatch):
    """Fencing: once the reaper has taken a job back, the old holder may not write its result."""
    from mistudio.queue.apps import huey_app
    from mistudio.queue.context import JobContext
    from mistudio.queue.reaper import reap_once

    monkeypatch.setenv("MISTUDIO_LEASE_SECONDS", "1")
    storage = huey_app("cpu").storage
    job = jobs.submit("diagnostics.echo")
    lease = storage.claim("slow-worker", block=False)
    ctx = JobContext(job.id, "diagnostics.echo", "cpu", lease.attempt, lease.id, "slow-worker", storage, redis_db("results"))
    assert ctx.before_commit()
    assert storage.renew(lease)
    time.sleep(1.2)
    assert not ctx.before_commit()  # expired, even before the reaper ran
    reap_once()
    assert not storage.renew(lease) and not ctx.before_commit()
    assert job.status() == "queued"


def test_gpu_job_child_dies_with_its_worker(workers):
    import psutil

    gpu = workers.start("gpu", lease=2)
    job = jobs.submit("diagnostics.sleep", {"seconds": 60}, queue="gpu")
    wait_for(lambda: _running(job) and job.progress(), timeout=30, message="job running")
    children = psutil.Process(gpu.pid).children()
    assert len(children) == 1
    gpu.send_signal(signal.SIGKILL)
    gpu.wait(10)
    wait_for(lambda: not children[0].is_running() or children[0].status() == psutil.STATUS_ZOMBIE, timeout=10,
             message="child gone")


def test_up_starts_missing_workers_and_status_reports_queues(workers, monkeypatch):
    from mistudio import lifecycle

    first = lifecycle.up()
    pids = {q: v["local_worker_pid"] for q, v in first["queues"].items()}
    assert all(pids.values())
    os.kill(pids["io"], signal.SIGKILL)
    wait_for(lambda: not lifecycle.status()["queues"]["io"]["local_worker_pid"], message="io worker gone")
    again = lifecycle.up()  # idempotent, and restarts what died
    assert again["queues"]["gpu"]["local_worker_pid"] == pids["gpu"]
    assert again["queues"]["io"]["local_worker_pid"] not in (None, pids["io"])
    job = jobs.submit("diagnostics.echo", queue="io")
    job.result(timeout=30)
    from mistudio.queue import supervisor

    assert set(supervisor.stop_workers()) == {"gpu", "io", "cpu"}
