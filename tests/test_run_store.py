"""Runs across devices that share only Redis, on one host: each "device" is a real worker with
its own MISTUDIO_HOME and MISTUDIO_DEVICE_ID, connected to the session's Redis as the app user
(the network-namespace version, with hosts really apart, is tests/cluster/).

- With a shared run store (MISTUDIO_RUN_STORE, one folder both devices see, as an NFS mount), a
  training whose device is killed mid-run resumes on the other from the lost device's checkpoint,
  and a third device with nothing of its own extracts its features (rebuilding the dataset).
- Without one, the other device starts the run over from step 0 and the job record says why;
  analysing the run on a device that does not have it fails, naming the device that does.
"""

from __future__ import annotations

import json

import shutil
import signal

import pytest

import mistudio

from helpers import run_cli, wait_for
from mistudio import events, jobs, runs
from mistudio.errors import InvalidInput
from mistudio.redis import acl, keys, server
from mistudio.settings import get_settings

pytestmark = pytest.mark.timeout(900)

TRAINING = {"steps": 120, "checkpoint_every": 20, "log_every": 5}


@pytest.fixture
def device(redis_server, tmp_path):
    """device(name, store=None) -> (env, home): a device's environment (its own home and id;
    the session's Redis by URL, as the app user, the password in the environment only)."""

    def make(name: str, store=None) -> tuple[dict, object]:
        home = tmp_path / f"home-{name}"
        env = {"MISTUDIO_HOME": str(home), "MISTUDIO_DEVICE_ID": name,
               "REDIS_URL": f"redis://{redis_server['host']}:{redis_server['port']}",
               "REDIS_USERNAME": acl.APP_USER, "REDIS_PASSWORD": server.read_password(get_settings())}
        if store is not None:
            env["MISTUDIO_RUN_STORE"] = str(store)
        return env, home

    return make


def _first_checkpoint(job):
    channel = keys.training_channel(job.id)
    return wait_for(lambda: next((e for e in events.history(channel) if e.type == "training.checkpoint"), None),
                    timeout=300, message="a first checkpoint")


def _kill_device(proc, job) -> int:
    """SIGKILL the device's worker (its job's child dies with it); the channel's seq at that moment."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    return events.latest(keys.training_channel(job.id)).seq


def _training_steps_after(job, seq: int) -> list[int]:
    return [e.data["step"] for e in events.history(keys.training_channel(job.id), after_seq=seq)
            if e.type == "training.progress" and e.data.get("phase") == "training"]


def test_with_a_shared_run_store_another_device_resumes_the_run_and_a_third_analyses_it(workers, device, tmp_path):
    store = tmp_path / "shared-runs"
    store.mkdir()
    env_a, home_a = device("dev-a", store)
    env_b, home_b = device("dev-b", store)
    env_c, home_c = device("dev-c", store)
    a = workers.start("gpu", lease=3, **env_a)
    job = jobs.submit("train_sae", TRAINING)
    checkpoint = _first_checkpoint(job)
    killed_at = _kill_device(a, job)

    workers.start("gpu", lease=3, **env_b)
    result = job.result(timeout=300)
    record = job.record()
    assert record["attempts"] == 2 and result["device"] == "dev-b" and result["final_metrics"]["step"] == 120
    resumed_from = int(record["resume_note"].split("resumed from step ")[1].split()[0])
    assert resumed_from >= checkpoint.data["step"]
    assert "written by device dev-a" in record["resume_note"] and record["resume_note"] == result["resume_note"]
    assert min(_training_steps_after(job, killed_at)) > checkpoint.data["step"]  # resumed, not restarted
    folder = runs.RunFolder(store / job.id)
    assert folder.exported() and result["run_dir"] == str(folder.path)
    writers = folder.read_info()["written_by"]
    assert [(w["device"], w["from_step"]) for w in writers] == [("dev-a", 0), ("dev-b", resumed_from)]
    assert folder.read_info()["device"] == "dev-b"
    assert record["checkpoint_device"] == "dev-b" and record["checkpoint_store"] == str(store)
    assert not (home_a / "runs" / job.id).exists() and not (home_b / "runs" / job.id).exists()

    # A third device, nothing of its own but the shared store: it finds the run and makes the dataset again.
    for proc in workers.procs:
        proc.send_signal(signal.SIGKILL)
    for home in (home_a, home_b):  # their disks are theirs: device C sees none of their datasets
        shutil.rmtree(home / "data")
    workers.start("gpu", lease=3, **env_c)
    extraction = jobs.submit("extract_features", {"training_id": job.id})  # from a client that does not mount it
    features = extraction.result(timeout=300)
    assert features["results_dir"] == str(folder.features) and features["total_features"] > 0
    assert (folder.features / runs.FEATURE_TABLE).is_file()
    dataset_id = folder.read_info()["dataset_id"]
    assert (home_c / "data" / "datasets" / dataset_id / "dataset.json").is_file()
    report = run_cli("report", job.id, env=env_c)
    assert report.returncode == 0, report.stderr
    assert report.stdout.strip() == str(folder.report) and folder.report.is_file()


def test_without_a_shared_store_the_other_device_restarts_from_step_0_and_the_record_says_why(workers, device):
    env_a, home_a = device("dev-a")
    env_b, home_b = device("dev-b")
    a = workers.start("gpu", lease=3, **env_a)
    job = jobs.submit("train_sae", TRAINING)
    checkpoint = _first_checkpoint(job)
    killed_at = _kill_device(a, job)

    b = workers.start("gpu", lease=3, **env_b)
    result = job.result(timeout=300)
    record = job.record()
    assert record["attempts"] == 2 and result["device"] == "dev-b" and result["final_metrics"]["step"] == 120
    note = record["resume_note"]
    assert note.startswith("restarted from step 0 on device dev-b: device dev-a's checkpoint at step "), note
    assert f"run store is local ({home_b / 'runs'}; device dev-a wrote to its own {home_a / 'runs'})" in note
    assert "set MISTUDIO_RUN_STORE to a path every device mounts" in note
    lost = runs.RunFolder(home_a / "runs" / job.id)
    assert (lost.checkpoints / f"step_{checkpoint.data['step']:09d}").is_dir() and not lost.exported()
    kept = runs.RunFolder(home_b / "runs" / job.id)
    # From the start again: steps before the lost checkpoint are trained a second time. The run's
    # metrics.jsonl has every report (progress events are coalesced: which early step reaches the
    # channel first depends on the machine's speed).
    kept_steps = [json.loads(line)["step"] for line in kept.metrics.read_text().splitlines()]
    assert min(kept_steps) < checkpoint.data["step"]
    assert kept.exported()
    assert [(w["device"], w["from_step"]) for w in kept.read_info()["written_by"]] == [("dev-b", 0)]
    assert record["checkpoint_device"] == "dev-b"
    shown = run_cli("job", job.id)
    assert shown.returncode == 0 and "restarted from step 0 on device dev-b" in shown.stdout, shown.stdout

    # Analysing it where it is not: refused by the device that tries, naming the one that has it.
    b.send_signal(signal.SIGKILL)
    b.wait(10)
    workers.start("gpu", lease=3, **env_a)
    extraction = jobs.submit("extract_features", {"training_id": job.id})
    wait_for(lambda: extraction.status() == "failed", timeout=120, message="the extraction refused on dev-a")
    error = extraction.record()["error"]
    assert "device dev-b wrote it to" in error and "MISTUDIO_RUN_STORE" in error and "device dev-a" in error, error
    report = run_cli("report", job.id, env=env_a)
    assert report.returncode != 0 and "device dev-b wrote it to" in report.stderr, report.stderr
    with pytest.raises(InvalidInput, match="device dev-b wrote it"):
        mistudio.steer(job.id, "def f():", {0: 1.0}, strength_unit="raw")


def test_a_worker_refuses_a_shared_run_store_that_is_not_mounted(redis_db, tmp_path):
    missing = tmp_path / "not-mounted"
    started = run_cli("worker", "-q", "cpu", env={"MISTUDIO_RUN_STORE": str(missing)}, timeout=60)
    assert started.returncode != 0
    assert f"MISTUDIO_RUN_STORE: {missing} is not a folder on this device" in started.stderr, started.stderr
    assert "mount the shared run store there" in started.stderr and not missing.exists()
    relative = run_cli("worker", "-q", "cpu", env={"MISTUDIO_RUN_STORE": "runs"}, timeout=60)
    assert relative.returncode != 0 and "MISTUDIO_RUN_STORE: must be an absolute path" in relative.stderr
