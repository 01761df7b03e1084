"""Coordination between processes and devices: GPU locks with fencing, leader election,
heartbeats, job assignments, the leader's duties. Real Redis, real processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import wait_for
from mistudio import events, jobs
from mistudio.tasks import all_tasks
from mistudio.coord import assignments, leader, locks
from mistudio.coord.heartbeat import healthy_workers
from mistudio.redis import keys
from mistudio.settings import get_settings

pytestmark = pytest.mark.timeout(180)

HELPER = str(Path(__file__).with_name("coord_procs.py"))


def _spawn(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, HELPER, *args])


def _worker_id(proc) -> str:
    return next(w["worker_id"] for w in healthy_workers(_locks()) if w["pid"] == proc.pid)


def _locks():
    from mistudio.redis.connection import get_client

    return get_client("locks")


# --- GPU locks ---------------------------------------------------------------------------------


def test_ten_processes_contending_for_one_gpu_lock_never_overlap(redis_db, tmp_path):
    log = tmp_path / "fences.log"
    procs = [_spawn("gpu-contender", "jetson_2", str(log), "3") for _ in range(10)]
    try:
        assert [p.wait(150) for p in procs] == [0] * 10
    finally:
        for p in procs:
            p.kill()
    lines = [line.split() for line in log.read_text().splitlines()]
    assert len(lines) == 60
    # strictly start/end pairs of the same holder, one after the other: nobody else got in between
    for begin, end in zip(lines[::2], lines[1::2]):
        assert begin[0] == "start" and end[0] == "end" and begin[1:] == end[1:]
    fences = [int(line[1]) for line in lines[::2]]
    assert fences == sorted(fences) and len(set(fences)) == 30  # monotonic fencing tokens
    assert locks.latest_fence(redis_db("locks"), "jetson_2") == fences[-1]
    assert locks.holder(redis_db("locks"), "jetson_2") is None  # all released


def test_a_stale_holders_checkpoint_write_is_refused(redis_db, monkeypatch):
    client = redis_db("locks")
    stale = locks.GpuLock("jetson_2", holder="slow", ttl=0.5)
    assert stale.acquire()
    time.sleep(0.7)  # stalled past its lease (a long GC pause, say)
    fresh = locks.GpuLock("jetson_2", holder="fresh", ttl=30)
    assert fresh.acquire()
    assert fresh.fence > stale.fence
    assert not locks.check_fence(client, "jetson_2", stale.fence)
    assert locks.check_fence(client, "jetson_2", fresh.fence)
    # what a job's child process asks before a checkpoint (the worker sets these variables)
    monkeypatch.setenv(locks.ENV_DEVICE, "jetson_2")
    monkeypatch.setenv(locks.ENV_FENCE, str(stale.fence))
    assert not locks.job_may_commit()
    monkeypatch.setenv(locks.ENV_FENCE, str(fresh.fence))
    assert locks.job_may_commit()
    # the stale holder can neither extend nor delete its successor's lock
    assert not stale.renew() and not stale.release()
    assert locks.holder(client, "jetson_2")["fence"] == fresh.fence
    with pytest.raises(locks.ResourceBusy, match="GPU jetson_2 is busy"):
        with locks.GpuLock("jetson_2"):
            pass


def _assignment_status(job_id: str) -> str | None:
    return (assignments.get(_locks(), job_id) or {}).get("status")


def test_two_gpu_consumers_on_one_device_take_turns_on_its_gpu(workers):
    """The gpu queue runs one job per consumer; the GPU lock keeps a second consumer on the
    same device (a hand-started `mistudio worker -q gpu`, say) from running a job beside it."""
    workers.start("gpu")
    workers.start("gpu")
    device = get_settings().device_id
    first, second = (jobs.submit("diagnostics.sleep", {"seconds": 3.0}, queue="gpu") for _ in range(2))
    wait_for(lambda: first.status() == "running" and second.status() == "running", message="both claimed")
    held = wait_for(lambda: locks.holder(_locks(), device), message="GPU lock held")
    runner = first if first.id in held["owner"] else second
    waiter = second if runner is first else first
    # Each assignment follows its job's start within a keeper visit (not with it): wait for them.
    wait_for(lambda: _assignment_status(runner.id) == "running", message="the runner's assignment")
    wait_for(lambda: _assignment_status(waiter.id) == f"waiting for GPU {device}",
             message="the other job waits for the GPU")
    a, b = first.result(timeout=60), second.result(timeout=60)
    assert a["finished"] <= b["started"] or b["finished"] <= a["started"]
    # A job's result is written before its worker lets go of the GPU and of the assignment.
    wait_for(lambda: locks.holder(_locks(), device) is None, message="the GPU lock released")
    assert locks.latest_fence(_locks(), device) == 2
    wait_for(lambda: assignments.get(_locks(), first.id) is None and assignments.get(_locks(), second.id) is None,
             message="both assignments removed")
    assert assignments.worker_jobs(_locks(), held["owner"].split("/")[0]) == []


# --- job assignments: one guard, two threads ------------------------------------------------------


def _guard(job_id: str = "diag_j1", worker_id: str = "dev:cpu:1", gpu: bool = False, task: str = "diagnostics.sleep"):
    from mistudio.coord.jobguard import JobGuard

    return JobGuard(get_settings(), job_id=job_id, slot=all_tasks()[task].slot, worker_id=worker_id, gpu=gpu)


def test_a_keeper_visit_before_the_guard_knows_the_status_or_after_release_writes_nothing(redis_db):
    guard = _guard()
    guard.assign()  # the keeper got there before acquire(): nothing is known yet
    assert assignments.get(_locks(), guard.job_id) is None
    assert guard.acquire(wait=None)
    guard.assign()
    assert assignments.get(_locks(), guard.job_id)["status"] == "running"
    assert [a["job_id"] for a in assignments.worker_jobs(_locks(), guard.worker_id)] == [guard.job_id]
    guard.release()
    guard.assign()  # a late visit: the job is over
    assert assignments.get(_locks(), guard.job_id) is None
    assert assignments.worker_jobs(_locks(), guard.worker_id) == []
    assert redis_db("locks").ttl(keys.job_assignment(guard.job_id)) == -2


def test_a_job_released_while_the_keeper_visits_never_leaves_an_assignment(redis_db):
    """The keeper thread calls assign() as fast as it can while jobs start and end; whatever the
    interleaving, no assignment outlives its job (before: a visit after release wrote one for 24 h)."""
    for i in range(40):
        guard = _guard(job_id=f"diag_race{i}")
        done = threading.Event()

        def keeper(guard=guard, done=done):
            while not done.is_set():
                guard.assign()

        thread = threading.Thread(target=keeper)
        thread.start()
        try:
            assert guard.acquire(wait=None)
            if i % 2:  # let the keeper write first on half of the rounds
                wait_for(lambda: assignments.get(_locks(), guard.job_id), message="the keeper's write")
            guard.release()
        finally:
            done.set()
            thread.join(10)
        assert assignments.get(_locks(), guard.job_id) is None, f"round {i}"
    assert redis_db("locks").smembers(keys.worker_jobs("dev:cpu:1")) == set()


def test_an_assignment_waiting_for_the_gpu_moves_forward_only(redis_db):
    device = get_settings().device_id
    other = locks.GpuLock(device, holder="another-job")
    assert other.acquire()
    guard = _guard(gpu=True)
    stop = threading.Event()
    got = []
    job = threading.Thread(target=lambda: got.append(guard.acquire(wait=stop.wait)))
    job.start()
    try:
        def visit():
            guard.assign()
            return _assignment_status(guard.job_id)

        assert wait_for(visit, message="the waiting status") == f"waiting for GPU {device}"
        for _ in range(20):  # the keeper keeps visiting: it never claims the job runs
            assert visit() == f"waiting for GPU {device}"
        other.release()
        assert wait_for(lambda: visit() == "running", message="running once the GPU is ours")
        job.join(10)
        assert got == [True] and locks.holder(_locks(), device)["fence"] == guard.gpu.fence
        assert guard.child_env() == {locks.ENV_DEVICE: device, locks.ENV_FENCE: str(guard.gpu.fence)}
    finally:
        stop.set()
        job.join(10)
        guard.release()
    assert assignments.get(_locks(), guard.job_id) is None and locks.holder(_locks(), device) is None


def test_a_job_stopped_while_waiting_for_the_gpu_gives_up_and_leaves_nothing(redis_db):
    device = get_settings().device_id
    other = locks.GpuLock(device, holder="another-job")
    assert other.acquire()
    guard, stop, got = _guard(gpu=True), threading.Event(), []
    job = threading.Thread(target=lambda: got.append(guard.acquire(wait=stop.wait)))
    job.start()
    wait_for(lambda: (guard.assign(), _assignment_status(guard.job_id))[1], message="the waiting status")
    stop.set()  # cancelled, say
    job.join(10)
    guard.release()
    assert got == [False] and assignments.get(_locks(), guard.job_id) is None
    assert locks.holder(_locks(), device)["owner"] == other.owner  # the other job's lock untouched
    other.release()


def test_two_deliveries_of_one_job_never_overwrite_or_delete_each_others_assignment(redis_db):
    """A delivery whose lease ran out (still stopping) and the next one, on another worker."""
    stale, fresh = _guard(worker_id="dev:cpu:1"), _guard(worker_id="dev:cpu:2")
    assert stale.acquire(wait=None) and fresh.acquire(wait=None)
    stale.assign()
    fresh.assign()  # refused: the stale delivery still has it
    assert assignments.get(_locks(), stale.job_id)["worker_id"] == "dev:cpu:1"
    assert assignments.worker_jobs(_locks(), "dev:cpu:2") == []
    stale.release()
    # the fresh delivery's keeper tries again and takes over
    taken = wait_for(lambda: (fresh.assign(), assignments.get(_locks(), fresh.job_id))[1], message="the fresh one")
    assert taken["worker_id"] == "dev:cpu:2" and taken["holder"] == fresh.holder
    # the other way round: a stale delivery's late first write and its release leave the fresh one alone
    late = _guard(worker_id="dev:cpu:1")
    assert late.acquire(wait=None)
    late.assign()
    late.release()
    assert assignments.get(_locks(), fresh.job_id)["holder"] == fresh.holder
    assert [a["worker_id"] for a in assignments.worker_jobs(_locks(), "dev:cpu:2")] == ["dev:cpu:2"]
    fresh.release()
    assert assignments.get(_locks(), fresh.job_id) is None


# --- leader election ---------------------------------------------------------------------------


def _renewals_of(client, first: dict, count: int):
    """A wait_for predicate: true once the leader's lease was seen extended `count` times (its TTL
    jumps back up), failing if meanwhile anyone but the same leader in the same term held it."""
    seen = {"ttl": first["ttl"], "renewals": 0}

    def renewed() -> bool:
        now = leader.current(client)
        assert now is not None and (now["node"], now["term"]) == (first["node"], first["term"]), now
        if now["ttl"] > seen["ttl"] + 0.05:
            seen["renewals"] += 1
        seen["ttl"] = now["ttl"]
        return seen["renewals"] >= count

    return renewed


def test_killing_the_leader_elects_another_within_the_ttl_and_never_two_leaders_per_term(redis_db, tmp_path):
    log, ttl = tmp_path / "leaders.log", 2.0
    procs = {f"node{i}": _spawn("elector", f"node{i}", str(log), str(ttl)) for i in range(3)}
    try:
        first = wait_for(lambda: leader.current(redis_db("locks")), timeout=30, message="a leader")
        wait_for(_renewals_of(redis_db("locks"), first, 2), timeout=15, interval=0.02, message="two renewals")
        procs[first["node"]].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        second = wait_for(lambda: (c := leader.current(redis_db("locks"))) and c["node"] != first["node"] and c,
                          timeout=30, interval=0.02, message="a new leader")
        took = time.monotonic() - killed
        assert took <= ttl + ttl / 3 + 0.5  # the lease runs out, then the next campaign round
        assert second["term"] > first["term"]
        time.sleep(1.0)
    finally:
        for p in procs.values():
            p.kill()
            p.wait(10)
    spans: dict[int, tuple[set, float, float]] = {}
    for line in log.read_text().splitlines():
        t, term, node = float(line.split()[0]), int(line.split()[1]), line.split()[2]
        nodes, start, end = spans.get(term, (set(), t, t))
        spans[term] = (nodes | {node}, min(start, t), max(end, t))
    assert all(len(nodes) == 1 for nodes, _, _ in spans.values())  # one leader per term
    ordered = sorted(spans.values(), key=lambda s: s[1])
    assert all(a[2] < b[1] for a, b in zip(ordered, ordered[1:]))  # and never two at the same time


def test_a_leader_that_resigns_hands_over_at_once(redis_db):
    client = redis_db("locks")
    value = leader.try_acquire(client, "a", ttl=30)
    assert value and leader.try_acquire(client, "b", ttl=30) is None
    assert leader.renew(client, value, 30)
    assert leader.resign(client, value)
    taken = leader.try_acquire(client, "b", ttl=30)
    assert taken and leader.current(client)["node"] == "b"
    assert not leader.renew(client, value, 30)  # the old value cannot extend b's term
    assert int(taken.split("|")[0]) == int(value.split("|")[0]) + 1


# --- heartbeats, assignments, the leader's duties ------------------------------------------------

FAST_BEATS = dict(MISTUDIO_HEARTBEAT_INTERVAL=0.5, MISTUDIO_HEARTBEAT_TTL=3, MISTUDIO_STATUS_INTERVAL=1)


def test_a_worker_killed_with_sigkill_leaves_healthy_workers_and_its_job_is_requeued(workers):
    doomed = workers.start("cpu", lease=2, **FAST_BEATS)
    survivor = workers.start("io", lease=2, **FAST_BEATS)  # another queue's consumer: its elector can lead
    doomed_id = _worker_id(doomed)
    beat = next(w for w in healthy_workers(_locks()) if w["worker_id"] == doomed_id)
    assert beat["device"] == get_settings().device_id and beat["memory_free"] > 0 and beat["memory_total"] > 0
    assert beat["resource_source"] in ("nvml", "tegrastats", "psutil") and "gpu_util" in beat

    job = jobs.submit("diagnostics.sleep", {"seconds": 3})
    wait_for(lambda: job.status() == "running", message="job running")
    # the assignment follows the start within a keeper visit
    assignment = wait_for(lambda: assignments.get(_locks(), job.id), message="the job's assignment")
    assert assignment["worker_id"] == doomed_id and assignment["status"] == "running"
    assert [a["job_id"] for a in assignments.worker_jobs(_locks(), doomed_id)] == [job.id]
    wait_for(lambda: doomed_id in {w["worker_id"] for w in healthy_workers(_locks())} and
             next(w for w in healthy_workers(_locks()) if w["worker_id"] == doomed_id)["active_jobs"] == [job.id],
             message="heartbeat shows the job")

    doomed.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: doomed_id not in {w["worker_id"] for w in healthy_workers(_locks())}, timeout=10,
             message="dead worker gone")
    assert time.monotonic() - killed <= 3 + 1.0  # its heartbeat's TTL, plus slack for a loaded machine
    # a worker leaves the registry only after its assignments: whoever no longer sees it sees none of them
    assert assignments.get(_locks(), job.id) is None and assignments.worker_jobs(_locks(), doomed_id) == []
    # the survivor leads (at once, or once the dead leader's lease ran out) and its reaper requeues the job
    wait_for(lambda: job.status() == "queued", timeout=20, message="job requeued by the leader's reaper")
    survivor_id = _worker_id(survivor)
    wait_for(lambda: (leader.current(_locks()) or {}).get("node") == survivor_id, message="the survivor leads")

    workers.start("cpu", lease=2, **FAST_BEATS)
    assert job.result(timeout=60)["attempt"] == 2


def test_one_consumer_leads_and_publishes_system_status(workers):
    procs = [workers.start(q, lease=2, **FAST_BEATS) for q in ("cpu", "io")]
    ids = {_worker_id(p) for p in procs}
    current = wait_for(lambda: leader.current(_locks()), message="a leader")
    assert current["node"] in ids
    wait_for(lambda: sum(w["leader"] for w in healthy_workers(_locks())) == 1, message="one leader in heartbeats")
    # The leader publishes every second; one published before the second consumer's first heartbeat
    # lists one worker, so wait for a round that sees both (each lists the workers alive at that moment).
    status = wait_for(lambda: (s := events.latest(keys.SYSTEM_STATUS_CHANNEL)) and
                      {w["worker_id"] for w in s.data["workers"]} == ids and s, timeout=15,
                      message="a system.status listing both workers")
    assert status.type == "system.status" and status.data["leader"] == current["node"]
    assert set(status.data["queues"]) == {"gpu", "io", "cpu"} and "memory_usage" in status.data["metrics"]

    # SIGTERM: the leader hands over at once instead of letting its lease run out
    leader_proc = next(p for p in procs if _worker_id(p) == current["node"])
    leader_proc.send_signal(signal.SIGTERM)
    assert leader_proc.wait(15) == 0
    other = wait_for(lambda: (c := leader.current(_locks())) and c["node"] != current["node"] and c, timeout=10,
                     message="the other consumer leads")
    assert other["node"] in ids and other["term"] > current["term"]
