"""A task is one spec: a new task is one module with one `@task(...)` registration, and its route,
rate tier, concurrency slot and channel come from that line, through the Python API, the CLI and a
real worker. A spec that names something unknown fails when its module is imported."""

from __future__ import annotations

import json
import os
import pkgutil
import sys
import textwrap
from pathlib import Path

import pytest

import mistudio.tasks
from helpers import run_cli, wait_for
from mistudio import events, jobs, limits
from mistudio.errors import InvalidInput
from mistudio.coord.slots import Slot
from mistudio.queue import apps, records
from mistudio.queue import tasks as registry
from mistudio.queue.routes import QUEUES
from mistudio.redis import keys
from mistudio.tasks import all_tasks, get_task, markdown_table

pytestmark = pytest.mark.timeout(240)
REPO = Path(__file__).resolve().parents[1]

# Exactly what a new task module holds (here a plugin package's, found by its entry point).
TOY_MODULE = '''
"""toy.count: count to three on a dataset's channel, slowly."""

import os
import time

from mistudio import events
from mistudio.errors import InvalidInput
from mistudio.queue.tasks import task
from mistudio.redis import keys


def validate_count(params: dict) -> dict:
    name = params.get("dataset_id")
    if not isinstance(name, str) or not name.isidentifier():
        raise InvalidInput("dataset_id", f"must be a plain name, got {name!r}", "pass e.g. dataset_id='toyset'")
    return {"dataset_id": name, "seconds": float(params.get("seconds", 0))}


@task("toy.count", queue="io", priority=4, rate_tier="dataset_processing", slot="generations",
      channel=keys.dataset_process_channel, channel_param="dataset_id", events=("dataset.progress",),
      validate=validate_count, id_prefix="toy", description="count to three on a dataset's channel")
def count(job, dataset_id: str, seconds: float) -> dict:
    started = time.time()
    channel = count.task_spec.channel_for(job.job_id, {"dataset_id": dataset_id})
    for n in (1, 2, 3):
        job.progress({"done": n, "total": 3})
        events.publish(channel, "dataset.progress", {"dataset_id": dataset_id, "tokens_done": n, "tokens_total": 3})
        time.sleep(seconds / 3)
    return {"dataset_id": dataset_id, "started": started, "finished": time.time(), "pid": os.getpid()}
'''


def _plugin(site: Path, name: str, module_text: str) -> dict:
    """Module `name` and the metadata an installed package with a `mistudio.tasks` entry point has;
    the environment a subprocess (CLI, worker) finds it in."""
    site.mkdir()
    (site / f"{name}.py").write_text(textwrap.dedent(module_text))
    dist = site / f"{name}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[mistudio.tasks]\n{name} = {name}\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", str(REPO))])}


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    """The toy as a plugin: found by its entry point in every subprocess, and registered in this
    process the way mistudio.tasks registers it at import."""
    env = _plugin(tmp_path / "site", "toy_count", TOY_MODULE)
    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))  # the toy leaves with the test
    monkeypatch.setattr(apps, "_apps", {})  # apps register the tasks known when they are made
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    import toy_count  # noqa: F401

    yield env
    sys.modules.pop("toy_count", None)


def _holds_the_slot(job: jobs.Job) -> bool:
    if job.status() in records.TERMINAL:  # ended before it was seen holding it: say how
        raise AssertionError(f"{job.id} ended {job.status()}: {job.record().get('error')}")
    return any(holder.startswith(f"{job.id}/") for holder in Slot("generations").holders())


def test_a_toy_task_by_one_spec_runs_through_the_api_the_cli_and_a_worker(toy_plugin, workers):
    spec = get_task("toy.count")
    assert (spec.route.queue, spec.route.priority, spec.isolated) == ("io", 4, False)
    assert limits.tiers_for_task("toy.count") == ["api", "dataset_processing"]
    listed = {row["task"]: row for row in json.loads(run_cli("tasks", "--json", env=toy_plugin).stdout)["tasks"]}
    assert listed["toy.count"]["slot"] == "generations" and listed["toy.count"]["rate tier"] == "dataset_processing"

    workers.start("io", lease=10, **toy_plugin)
    first = jobs.submit("toy.count", {"dataset_id": "alpha", "seconds": 4})
    assert first.id.startswith("toy_")
    assert (first.record()["queue"], first.record()["priority"]) == ("io", 4)
    assert first.channel() == keys.dataset_process_channel("alpha")
    wait_for(lambda: _holds_the_slot(first), 60, message="the toy job holding its slot")
    # The io worker's second thread claims this one at once; its slot (one per device) makes it wait.
    second = jobs.submit("toy.count", {"dataset_id": "beta"})
    a, b = first.result(timeout=90), second.result(timeout=90)
    assert b["started"] >= a["finished"]

    shown = run_cli("submit", "toy.count", "-p", "dataset_id=gamma", "-p", "seconds=0", "--wait", "--json",
                    env=toy_plugin)
    assert shown.returncode == 0, shown.stderr
    third = json.loads(shown.stdout)
    assert (third["queue"], third["priority"], third["channel"]) == ("io", 4, keys.dataset_process_channel("gamma"))
    assert third["params"] == {"dataset_id": "gamma", "seconds": 0.0}
    assert third["state"] == "succeeded" and third["result"]["dataset_id"] == "gamma"
    for job_id, dataset in ((first.id, "alpha"), (second.id, "beta"), (third["job_id"], "gamma")):
        seen = events.history(jobs.get_job(job_id).channel())
        assert [e.payload.tokens_done for e in seen] == [1, 2, 3] and {e.type for e in seen} <= set(spec.events)
        assert seen[0].data["dataset_id"] == dataset

    # Its rate tier (dataset_processing, 5 an hour) is counted: two more pass, the sixth is refused.
    for n in range(2):
        jobs.submit("toy.count", {"dataset_id": f"more{n}"})
    with pytest.raises(limits.RateLimited, match="dataset_processing"):
        jobs.submit("toy.count", {"dataset_id": "refused"})
    refused = run_cli("submit", "toy.count", "-p", "dataset_id=refused", env=toy_plugin)
    assert refused.returncode == 1 and "dataset_processing" in refused.stderr, refused.stderr
    assert not [r for r in jobs.list_jobs(100, task="toy.count") if r["params"]["dataset_id"] == "refused"]


def test_bad_input_to_the_toy_is_refused_before_anything_is_queued(toy_plugin, redis_db):
    with pytest.raises(InvalidInput, match="dataset_id: must be a plain name"):
        jobs.submit("toy.count", {"dataset_id": "../etc"})
    refused = run_cli("submit", "toy.count", "--params", '{"dataset_id": 3}', env=toy_plugin)
    assert refused.returncode == 1 and "dataset_id: must be a plain name" in refused.stderr
    assert jobs.list_jobs(10) == []


def _register(**fields):
    spec = dict(queue="cpu", priority=1, description="a test task")
    spec.update(fields)
    return registry.task("toy.bad", **spec)(lambda job: {})


@pytest.mark.parametrize("fields, message", [
    ({"queue": "tpu"}, "queue: unknown queue 'tpu'. Fix: use one of gpu, io, cpu"),
    ({"priority": 300}, "priority: must be an integer 0..255"),
    ({"rate_tier": "trainings"}, "rate_tier: unknown rate tier 'trainings'"),
    ({"slot": "training_starts"}, "slot: unknown concurrency slot 'training_starts'"),
    ({"channel": lambda ident: f"toy:{ident}", "events": ("dataset.progress",)}, "is not a channel function"),
    ({"channel": keys.training_channel, "events": ("training.done",)}, "unknown event type 'training.done'"),
    ({"channel": keys.training_channel}, "a channel needs the event types"),
    ({"id_prefix": "a/b"}, "id_prefix: 'a/b' cannot start a job id"),
    ({"description": ""}, "description: must be one non-empty line"),
])
def test_a_spec_naming_something_unknown_fails_at_registration(monkeypatch, fields, message):
    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))
    with pytest.raises(InvalidInput, match="task 'toy.bad': ") as info:
        _register(**fields)
    assert message in str(info.value)
    assert "toy.bad" not in registry.registered()


def test_a_task_name_is_registered_once(monkeypatch):
    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))
    with pytest.raises(InvalidInput, match="'diagnostics.echo' is registered twice"):
        registry.task("diagnostics.echo", queue="cpu", priority=1, description="another echo")(lambda job: {})


def test_every_task_module_is_loaded_by_the_catalogue():
    package = Path(mistudio.tasks.__file__).parent
    modules = {f"mistudio.tasks.{m.name}" for m in pkgutil.iter_modules([str(package)])} - {"mistudio.tasks.reporting"}
    assert {spec.fn.__module__ for spec in all_tasks().values() if spec.fn.__module__.startswith("mistudio.")} == modules


def test_every_spec_names_a_known_queue_and_is_what_the_docs_list():
    assert {spec.queue for spec in all_tasks().values()} <= set(QUEUES)
    assert markdown_table() in (REPO / "ARCHITECTURE.md").read_text(), (
        "ARCHITECTURE.md's task table is not the specs': paste `python -c 'import mistudio.tasks as t; "
        "print(t.markdown_table())'` there")


def test_the_shipped_tasks_keep_their_routes_tiers_and_slots():
    facts = {name: (s.queue, s.priority, s.rate_tier, s.slot) for name, s in all_tasks().items()}
    assert facts == {
        "train_sae": ("gpu", 10, "training_starts", "trainings"),
        "steer": ("gpu", 12, "generations", "generations"),
        "build_reference_model": ("gpu", 8, "training_starts", "trainings"),
        "extract_features": ("gpu", 7, None, None),
        "download_model": ("io", 5, "downloads", "downloads"),
        "download_dataset": ("io", 5, "downloads", "downloads"),
        "process_dataset": ("cpu", 3, "dataset_processing", "processing"),
        "diagnostics.sleep": ("cpu", 1, None, None),
        "diagnostics.echo": ("cpu", 1, None, None),
        "diagnostics.fail": ("cpu", 1, None, None),
    }
    assert all_tasks()["train_sae"].channel_for("tr_1", {}) == keys.training_channel("tr_1")
    assert all_tasks()["extract_features"].channel_for("fx_1", {"training_id": "tr_1"}) == keys.features_channel("tr_1")
    assert all_tasks()["process_dataset"].channel_for("ds_1", {"dataset_id": None}) == keys.dataset_process_channel("ds_1")


@pytest.mark.parametrize("override, message", [
    ({"queue": "tpu"}, "queue: unknown queue 'tpu'"),
    ({"priority": 256}, "priority: must be an integer 0..255"),
    ({"priority": True}, "priority: must be an integer 0..255"),
])
def test_a_submit_may_override_the_route_only_with_a_known_queue_and_priority(redis_db, override, message):
    with pytest.raises(InvalidInput, match=message):
        jobs.submit("diagnostics.echo", {}, **override)
    assert jobs.list_jobs(10) == []


def test_an_unknown_task_names_the_known_ones(redis_db):
    with pytest.raises(InvalidInput, match="task: unknown task 'train'. Fix: use one of build_reference_model, diagnostics.echo"):
        jobs.submit("train", {})
    refused = run_cli("submit", "train")
    assert refused.returncode == 1 and "unknown task 'train'" in refused.stderr and "train_sae" in refused.stderr


def test_a_plugin_with_a_bad_spec_or_a_broken_module_stops_the_command_naming_it(tmp_path):
    bad = _plugin(tmp_path / "a", "bad_spec", '''
        from mistudio.queue.tasks import task

        @task("toy.bad", queue="tpu", priority=1, description="never registered")
        def bad(job):
            return {}
        ''')
    out = run_cli("tasks", env=bad)
    assert out.returncode != 0 and "task 'toy.bad': queue: unknown queue 'tpu'. Fix: use one of gpu" in out.stderr

    broken = _plugin(tmp_path / "b", "broken_tasks", "raise RuntimeError('a bug in the plugin')\n")
    out = run_cli("tasks", env=broken)
    assert out.returncode != 0
    assert "task module 'broken_tasks' (entry point 'broken_tasks' of broken_tasks) failed to import: a bug" in out.stderr
