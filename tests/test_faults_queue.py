"""The queue under real faults (issue 18): a Redis restart during a checkpoint commit, a late
requeue racing a redelivery, a worker killed while it spawns its job's child, crafted and
poison messages, leftovers of killed writers, and training.error on every failure path.
Real redis-server, real worker processes, real trainings."""

from __future__ import annotations

import array
import fcntl
import json
import os
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import psutil
import pytest

from helpers import wait_for
from mistudio import events, jobs, runs
from mistudio.errors import InvalidInput
from mistudio.queue import records
from mistudio.queue.apps import huey_app, make_task
from mistudio.redis import keys
from mistudio.redis.connection import get_client
from mistudio.settings import get_settings

pytestmark = pytest.mark.timeout(400)

FAULTS = Path(__file__).with_name("faults")  # sitecustomize.py: pause a process at its first checkpoint commit
TINY = {"steps": 40, "checkpoint_every": 20, "log_every": 10}


def _running(job) -> bool:
    return job.record()["state"] == "running"


@pytest.fixture
def private_redis(tmp_path, monkeypatch):
    """A Redis of this test's own, in a home of its own (workers started after it use it too):
    the tests that kill Redis leave the session's server alone."""
    from mistudio.redis import server
    from mistudio.redis.connection import reset_pools

    monkeypatch.setenv("MISTUDIO_HOME", str(tmp_path / "home"))
    reset_pools()
    yield server.start()
    server.stop()
    reset_pools()


def _kill_redis() -> None:
    from mistudio.redis import server

    os.kill(server.read_state()["pid"], signal.SIGKILL)
    wait_for(lambda: server.read_state() is None, message="redis gone")


def _start_redis() -> None:
    from mistudio.redis import server

    server.start()  # the same port and passwords: clients reconnect by themselves


def _gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _job_children(home: Path) -> list[psutil.Process]:
    """Live job child processes of this test session (other sessions may run on this machine)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if "mistudio.queue.child" in (process.info["cmdline"] or []) and not _gone(process) \
                    and process.environ().get("MISTUDIO_HOME") == str(home):
                found.append(process)
        except psutil.Error:
            pass
    return found


def _error_events(job) -> list:
    return [e for e in events.history(keys.training_channel(job.id)) if e.type == "training.error"]


# --- 1. a Redis restart shorter than the lease costs a training nothing ------------------


@pytest.mark.parametrize("outage", [3.0, 8.0])
def test_a_redis_restart_during_a_checkpoint_commit_costs_the_training_nothing(private_redis, workers, tmp_path,
                                                                                outage):
    pause = tmp_path / "pause"
    pause.mkdir()
    worker = workers.start("gpu", lease=60, MISTUDIO_TEST_PAUSE_COMMIT=pause,  # the default lease
                           PYTHONPATH=os.pathsep.join([str(FAULTS), os.environ.get("PYTHONPATH", "")]))
    job = jobs.submit("train_sae", TINY)
    paused = json.loads(wait_for(lambda: (pause / "paused").is_file() and (pause / "paused").read_text(),
                                 timeout=240, message="the training at its first checkpoint commit"))
    assert paused["job"] == job.id and paused["step"] == TINY["checkpoint_every"]

    _kill_redis()
    (pause / "resume").touch()  # the child checks its lease now, with Redis away
    time.sleep(outage)  # the outage itself
    _start_redis()

    result = job.result(timeout=300)
    record = job.record()
    assert record["state"] == "succeeded" and record["attempts"] == 1  # neither failed nor redelivered
    assert result["final_metrics"]["step"] == TINY["steps"]
    history = events.history(keys.training_channel(job.id))
    assert not [e for e in history if e.type == "training.error"]
    assert TINY["checkpoint_every"] in [e.data["step"] for e in history if e.type == "training.checkpoint"]
    log = workers.log(worker)
    assert "cannot reach Redis to check the lease" in log  # the commit really waited through the outage
    assert "refusing to commit" not in log


def test_a_commit_waits_through_a_redis_restart_and_refuses_a_lost_lease(private_redis, monkeypatch):
    """The fence itself: unreachable Redis means "ask again", a reaped lease means "lost"."""
    import threading

    from mistudio.queue.context import JobContext
    from mistudio.queue.reaper import reap_once

    monkeypatch.setenv("MISTUDIO_LEASE_SECONDS", "30")
    storage = huey_app("cpu").storage
    job = jobs.submit("diagnostics.echo")
    lease = storage.claim("a-worker", block=False)
    ctx = JobContext(job.id, "diagnostics.echo", "cpu", lease.attempt, lease.id, "a-worker", storage, get_client("results"))
    _kill_redis()
    restart = threading.Timer(3.0, _start_redis)
    restart.start()
    asked = time.monotonic()
    try:
        assert ctx.before_commit()  # waited for Redis, then confirmed the lease
    finally:
        restart.join()
    assert time.monotonic() - asked >= 2.5 and ctx.stop_reason is None

    monkeypatch.setenv("MISTUDIO_LEASE_SECONDS", "1")
    short = huey_app("cpu").storage
    other = jobs.submit("diagnostics.echo")
    lease = wait_for(lambda: short.claim("a-worker", block=False), message="claim")
    ctx = JobContext(other.id, "diagnostics.echo", "cpu", lease.attempt, lease.id, "a-worker", short, get_client("results"))
    wait_for(lambda: any(r.lease_id == lease.id for r in reap_once()), timeout=10, message="lease reaped")
    assert not ctx.before_commit() and ctx.stop_reason == "lease_lost"  # comes back, does not fail
    assert other.status() == "queued"


# --- 2. the record follows the newest delivery; cancel stops the running attempt --------


def test_a_late_requeue_never_overwrites_a_newer_delivery(redis_db, monkeypatch):
    monkeypatch.setenv("MISTUDIO_LEASE_SECONDS", "1")
    storage, results = huey_app("cpu").storage, redis_db("results")
    job = jobs.submit("diagnostics.echo")
    first = storage.claim("worker-a", block=False)
    assert records.start(results, job.id, worker="worker-a", lease=first.id, attempt=first.attempt,
                         deadline=first.deadline)[0] == "run"
    wait_for(lambda: storage.reap(3), timeout=10, message="the first lease reaped")
    second = storage.claim("worker-b", block=False)
    assert second.attempt == 2
    assert records.start(results, job.id, worker="worker-b", lease=second.id, attempt=second.attempt,
                         deadline=second.deadline)[0] == "run"

    # The reaper's record update for the first delivery lands after the second started: refused.
    assert not records.mark_queued(results, job.id, note="late", lease=first.id)
    assert not records.finish(results, job.id, "failed", error="stale", lease=first.id)
    # A worker that stalled between its claim and its start cannot start the old delivery again.
    assert records.start(results, job.id, worker="worker-a", lease=first.id, attempt=1,
                         deadline=first.deadline) == ("expired", None)
    record = job.record()
    assert (record["state"], record["lease"], record["attempts"], record["worker"]) == ("running", second.id, 2,
                                                                                        "worker-b")
    assert records.stop_reason(results, job.id, first.id) == "lease_lost"  # the stale one is told to stop
    assert records.stop_reason(results, job.id, second.id) is None
    assert job.cancel()
    assert records.stop_reason(results, job.id, second.id) == "cancelled"


def test_a_redelivered_job_shows_running_and_cancel_stops_it(workers):
    first = workers.start("cpu", lease=2)
    job = jobs.submit("diagnostics.sleep", {"seconds": 120})
    wait_for(lambda: _running(job), message="job running")
    first.send_signal(signal.SIGKILL)
    first.wait(10)

    second = workers.start("cpu", lease=2)
    wait_for(lambda: _running(job) and job.record()["attempts"] == 2, timeout=30, message="attempt 2 running")
    storage = huey_app("cpu").storage
    # For several reaper rounds (every 0.5 s) the record keeps naming the running delivery.
    watch_until = time.monotonic() + 4
    while time.monotonic() < watch_until:
        record = job.record()
        assert record["state"] == "running" and record["attempts"] == 2, record
        assert record["worker"].endswith(f":cpu:{second.pid}")
        assert get_client("queue").hexists(keys.queue_lease_info("cpu"), record["lease"])  # in flight
        time.sleep(0.1)
    assert job.progress()["attempt"] == 2

    assert job.cancel()
    wait_for(lambda: job.status() == "cancelled", timeout=15, message="cancelled")
    assert job.record()["error"] == "cancelled by user"  # stopped while running, not "before it started"
    wait_for(lambda: storage.counts()["in_flight"] == 0, timeout=10, message="the message acknowledged")
    assert storage.counts()["queued"] == 0 and second.poll() is None


# --- 5. no orphaned child: a worker killed as it spawns the child takes the child along --


def _stdin_bytes(pid: int) -> int:
    """Bytes waiting in a process's stdin pipe (the worker's start line, once written)."""
    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        count = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, count)
        return count[0]
    finally:
        os.close(fd)


def test_a_worker_killed_while_spawning_its_child_leaves_no_child(workers, mistudio_home):
    first = workers.start("gpu", lease=2)
    job = jobs.submit("train_sae", TINY)
    worker = psutil.Process(first.pid)

    def spawned():
        for process in worker.children():
            try:
                if "mistudio.queue.child" in process.cmdline():
                    return process
            except psutil.Error:
                pass

    child = wait_for(spawned, timeout=60, interval=0.002, message="the job's child process")
    child.suspend()  # frozen right after exec: before its interpreter could do anything itself
    wait_for(lambda: _stdin_bytes(child.pid) > 0, timeout=10, interval=0.01, message="the job handed to the child")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    child.resume()
    wait_for(lambda: _gone(child), timeout=2, message="the child gone with its worker")

    second = workers.start("gpu", lease=2)
    wait_for(lambda: _running(job) and job.record()["attempts"] == 2, timeout=60, message="attempt 2 running")
    children = wait_for(lambda: _job_children(mistudio_home), timeout=60, message="attempt 2's child")
    assert [c.ppid() for c in children] == [second.pid]  # one child, the new worker's: never two at once
    assert job.cancel()
    wait_for(lambda: job.status() == "cancelled", timeout=60, message="cancelled")


def test_a_child_whose_parent_is_already_gone_exits_before_running_anything(tmp_path):
    from mistudio.queue.child import parent_death_preexec

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    marker = tmp_path / "ran"
    child = subprocess.run([sys.executable, "-c", f"open({str(marker)!r}, 'w')"],
                           preexec_fn=parent_death_preexec(gone.pid), timeout=30)
    assert child.returncode == 137 and not marker.exists()


# --- 6. crafted messages: checked by the worker, dead-lettered, never run ---------------


def test_crafted_messages_are_dead_lettered_and_never_run(workers, tmp_path):
    from mistudio.tasks.training import validate_train_sae

    settings = get_settings()
    app = huey_app("gpu")
    escaped = tmp_path / "escaped-run"
    traversal = os.path.relpath(escaped, settings.runs_dir)  # ../../.. up and into this test's folder
    params = validate_train_sae({"steps": 5})
    app.enqueue(make_task(app, "train_sae", traversal, params, 10))
    honest_top = json.loads(app.serialize_task(make_task(app, "train_sae", traversal, params, 10)))
    honest_top["id"] = "tr_innocent"  # a valid top-level id over a traversal in the task itself
    app.storage.enqueue(json.dumps(honest_top).encode(), 10)
    unknown = json.loads(app.serialize_task(make_task(app, "train_sae", "tr_unknown", params, 10)))
    unknown["__message__"]["name"] = "os.system"
    app.storage.enqueue(json.dumps(unknown).encode(), 10)

    workers.start("gpu")
    wait_for(lambda: app.storage.counts()["dead"] == 3, timeout=30, message="three dead letters")
    reasons = {key: letter["reason"] for key, letter in app.storage.dead_letters().items()}
    assert "invalid job id" in next(r for k, r in reasons.items() if k.startswith("?"))
    assert "do not match" in reasons["tr_innocent"]
    assert "unknown task 'os.system'" in reasons["tr_unknown"]
    assert app.storage.counts()["in_flight"] == 0 and app.storage.counts()["queued"] == 0
    assert not escaped.exists() and not list(tmp_path.parent.glob("escaped-run*"))
    assert records.get(get_client("results"), traversal) is None


def test_a_run_folder_never_resolves_outside_runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MISTUDIO_HOME", str(tmp_path / "home"))
    settings = get_settings()
    settings.runs_dir.mkdir(parents=True)
    (settings.runs_dir / "tr_link").symlink_to(tmp_path)
    for bad in ("../outside", "a/b", "/etc", "..", ".hidden", "", "tr_link", "x" * 65):
        with pytest.raises(InvalidInput) as info:
            runs.for_training(bad)
        assert info.value.field == "training_id" and "Fix:" in str(info.value)
    assert runs.for_training("tr_ok.v2").path == settings.runs_dir / "tr_ok.v2"


# --- 9. poison messages reach the dead letters once, every one kept ---------------------


POISON = [b"\xff\xfe not even UTF-8", b"plain text, not JSON", b'{"id": 5, "name": "numbers are no id"}',
          b'["a", "list"]', b'{"__message__": {"name": "diagnostics.echo"}}']


def test_poison_messages_reach_the_dead_letters_once_and_are_all_kept(workers, redis_db):
    storage = huey_app("cpu").storage
    for message in POISON:
        storage.enqueue(message, 1)
    workers.start("cpu", lease=2)
    wait_for(lambda: storage.counts()["dead"] == len(POISON), timeout=30, message="every poison message dead")
    letters = storage.dead_letters()
    assert sorted(letter["message"] for letter in letters.values()) == sorted(POISON)
    assert all(letter["reason"] for letter in letters.values())
    watch_until = time.monotonic() + 5  # > 2 leases and many reaper rounds: nothing comes back
    while time.monotonic() < watch_until:
        assert storage.counts() == {"queued": 0, "scheduled": 0, "in_flight": 0, "dead": len(POISON)}
        time.sleep(0.2)
    assert redis_db("queue").hlen(keys.queue_attempts("cpu")) == 0
    assert jobs.submit("diagnostics.echo", {"after": "poison"}).result(timeout=30)["params"] == {"after": "poison"}


def test_messages_without_an_id_are_counted_even_when_no_worker_survives_them(redis_db, monkeypatch):
    """A consumer that crashes on every delivery: the reaper still dead-letters them, both kept."""
    monkeypatch.setenv("MISTUDIO_LEASE_SECONDS", "1")
    storage = huey_app("cpu").storage
    junk = [b"junk one", b"junk two"]
    for message in junk:
        storage.enqueue(message, 1)
    for attempt in (1, 2):
        leases = [storage.claim("crashing-worker", block=False) for _ in junk]
        assert [lease.attempt for lease in leases] == [attempt, attempt]
        reaped = []
        wait_for(lambda: reaped.extend(storage.reap(2)) or len(reaped) == 2, timeout=10, message="both reaped")
        assert {r.outcome for r in reaped} == ({"requeued"} if attempt == 1 else {"dead"})
    letters = storage.dead_letters()
    assert sorted(letter["message"] for letter in letters.values()) == junk
    assert all("delivered 2 times" in letter["reason"] for letter in letters.values())
    assert storage.counts()["queued"] == 0 and storage.counts()["in_flight"] == 0


# --- 11. leftovers of killed writers are removed by the next attempt --------------------


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_leftovers_of_a_killed_attempt_are_removed_by_the_next(workers, mistudio_home):
    settings = get_settings()
    first = workers.start("gpu", lease=2)
    job = jobs.submit("train_sae", {**TINY, "hook_point": "blocks.1.hook_resid_post"})  # a cache nobody built
    activations = settings.data_dir / "activations"
    partial = wait_for(lambda: next(iter(activations.glob("*/.*tmp-*")), None), timeout=240, interval=0.02,
                       message="a partial activation cache")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    wait_for(lambda: not _job_children(mistudio_home), timeout=10, message="the child gone with its worker")
    assert partial.is_dir()  # the killed builder left it behind

    run_dir = runs.for_training(job.id).path
    run_dir.mkdir(parents=True, exist_ok=True)
    abandoned = run_dir / f".tmp-sae-{_dead_pid()}-0123abcd"  # as an export killed mid-write leaves it
    abandoned.mkdir()
    live = run_dir / f".tmp-sae-{os.getpid()}-89abcdef"  # a live writer's (this process): never touched
    live.mkdir()

    workers.start("gpu", lease=2)
    assert job.result(timeout=300)["final_metrics"]["step"] == TINY["steps"]
    assert not partial.exists() and not list(activations.glob("*/.*tmp-*"))
    assert not abandoned.exists() and live.is_dir()
    assert not list((run_dir / "checkpoints").glob(".tmp-*")) and not list(run_dir.glob(".old-*"))


def test_temp_folders_of_dead_writers_go_and_live_ones_stay(tmp_path):
    from mistudio.tempdirs import remove_abandoned, temp_sibling

    dead = _dead_pid()
    gone = [tmp_path / f".tmp-sae-{dead}-0123abcd", tmp_path / f".old-step_000000020-{dead}-0123abcd",
            tmp_path / f".blocks.3.hook_resid_post-float32-ctx0-187.tmp-{dead}"]
    kept = [temp_sibling(tmp_path / "sae"), tmp_path / ".tmp-sae-0123abcd", tmp_path / "sae"]
    for path in gone + kept:
        path.mkdir()
    assert sorted(remove_abandoned(tmp_path)) == sorted(gone)
    assert all(path.is_dir() for path in kept)


def test_in_a_shared_run_store_only_this_devices_dead_writers_leftovers_go(tmp_path, monkeypatch):
    """A pid means something only on its own device: another device's writer may be alive there."""
    from mistudio.tempdirs import remove_abandoned, temp_sibling

    monkeypatch.setenv("MISTUDIO_DEVICE_ID", "dev-a")
    dead = _dead_pid()
    written_on_a = temp_sibling(tmp_path / "step_000000040").name.replace(f"-{os.getpid()}@", f"-{dead}@")
    monkeypatch.setenv("MISTUDIO_DEVICE_ID", "dev-b")
    written_on_b = temp_sibling(tmp_path / "step_000000020").name.replace(f"-{os.getpid()}@", f"-{dead}@")
    for name in (written_on_a, written_on_b):
        (tmp_path / name).mkdir()
    assert remove_abandoned(tmp_path) == [tmp_path / written_on_b]
    assert (tmp_path / written_on_a).is_dir()


# --- training.error on every failure path ------------------------------------------------


def test_every_way_a_training_fails_publishes_training_error_once(workers, tmp_path, mistudio_home):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("A corpus that is gone by the time the training runs. " * 200)
    gone_corpus = jobs.submit("train_sae", {**TINY, "dataset": str(corpus)})
    corpus.unlink()
    timed_out = jobs.submit("train_sae", {"steps": 100000}, time_limit=2)
    killed = jobs.submit("train_sae", TINY)
    workers.start("gpu", lease=3, MISTUDIO_MAX_ATTEMPTS=1)

    with pytest.raises(jobs.JobFailed):
        gone_corpus.result(timeout=240)  # raised in the task
    with pytest.raises(jobs.JobFailed, match="time limit"):
        timed_out.result(timeout=240)  # stopped by its worker
    wait_for(lambda: _running(killed) and _job_children(mistudio_home), timeout=120, message="the third one running")
    for child in _job_children(mistudio_home):
        child.kill()  # its process dies (think: the OOM killer), on its only attempt
    with pytest.raises(jobs.JobFailed, match="killed by signal 9"):
        killed.result(timeout=60)
    for job, state in ((gone_corpus, "failed"), (timed_out, "failed"), (killed, "dead")):
        assert job.status() == state
        errors = _error_events(job)
        assert len(errors) == 1 and errors[0].data["error"] == job.record()["error"]
        assert events.history(keys.training_channel(job.id))[-1].type == "training.error"


def test_a_training_dead_after_every_attempt_publishes_training_error(redis_db, monkeypatch):
    """The reaper's path: each delivery's worker died (claimed and abandoned here)."""
    from mistudio.queue.reaper import reap_once

    monkeypatch.setenv("MISTUDIO_LEASE_SECONDS", "1")
    monkeypatch.setenv("MISTUDIO_MAX_ATTEMPTS", "1")
    job = jobs.submit("train_sae", TINY)
    storage = huey_app("gpu").storage
    lease = storage.claim("a-dying-worker", block=False)
    records.start(redis_db("results"), job.id, worker="a-dying-worker", lease=lease.id, attempt=lease.attempt,
                  deadline=lease.deadline)
    wait_for(lambda: any(r.outcome == "dead" for r in reap_once()), timeout=10, message="dead")
    assert job.status() == "dead"
    errors = _error_events(job)
    assert len(errors) == 1 and "each of 1 attempts" in errors[0].data["error"]
