"""The `mistudio` command a researcher reads: `job ID` as a summary (and --json for machines), the
jobs table at 100 % for succeeded jobs with ids that cannot break it, refusals that name the fix.
Real CLI subprocesses, real Redis, a real worker."""

from __future__ import annotations

import json
import time

import pytest

from helpers import run_cli
from mistudio import jobs
from mistudio.cli.output import clean, table
from mistudio.cli.summary import progress_text
from mistudio.events import DatasetProgress, DownloadProgress, EventData, FeaturesProgress, TrainingProgress
from mistudio.queue import records
from mistudio.redis import keys

pytestmark = pytest.mark.timeout(180)


def test_job_prints_a_readable_summary_and_json_for_machines(workers):
    workers.start("cpu", lease=10)
    job = jobs.submit("diagnostics.sleep", {"seconds": 0.6, "tag": "summary"})
    job.result(timeout=60)

    shown = run_cli("job", job.id)
    assert shown.returncode == 0, shown.stderr
    lines = {line.split()[0]: line for line in shown.stdout.splitlines() if line.strip()}
    assert lines["job"].startswith(f"job       {job.id}  (diagnostics.sleep on the cpu queue, priority 1)")
    assert lines["state"].startswith("state     succeeded, 1 attempt, worker ")
    assert "(waited " in lines["started"] and "(ran " in lines["finished"]
    assert lines["progress"] == "progress  100%"
    assert "seconds=0.6" in lines["params"] and "tag=summary" in lines["params"]
    assert "attempt=1" in lines["result"]
    assert "{" not in shown.stdout  # no raw Python dicts

    data = json.loads(run_cli("job", job.id, "--json").stdout)
    assert data["state"] == "succeeded" and data["params"] == {"seconds": 0.6, "tag": "summary"}
    assert 0.5 < data["duration_s"] < 30 and data["result"]["result"]["tag"] == "summary"


def test_a_failed_job_shows_its_error_and_the_workers_traceback(workers):
    workers.start("cpu", lease=10)
    job = jobs.submit("diagnostics.fail", {"message": "boom from the test"})
    with pytest.raises(jobs.JobFailed):
        job.result(timeout=60)
    shown = run_cli("job", job.id).stdout
    assert "state     failed, 1 attempt" in shown and "error     RuntimeError: boom from the test" in shown
    assert "Traceback (most recent call last):" in shown


def test_jobs_table_shows_succeeded_jobs_at_100_percent_and_escapes_ids(redis_db, workers):
    workers.start("cpu", lease=10)
    done = jobs.submit("diagnostics.sleep", {"seconds": 0.3})
    done.result(timeout=60)
    # A record as a crafted message could leave it: an id with a newline and a terminal escape.
    records.create(redis_db("results"), "evil\nid\x1b[2J", "diagnostics.echo", "cpu", 1, {}, 60.0)
    out = run_cli("jobs")
    assert out.returncode == 0, out.stderr
    rows = out.stdout.splitlines()
    assert len(rows) == 3  # header + two jobs: the newline did not split a row
    row = next(r for r in rows if r.startswith(done.id))
    assert row.split()[3:5] == ["succeeded", "100%"]
    assert any(r.startswith("evil\\nid\\x1b[2J") for r in rows) and "\x1b" not in out.stdout


def test_a_refused_train_names_the_field_and_the_fix_and_queues_nothing(redis_db):
    started = time.monotonic()
    out = run_cli("train", "--k", "100000")
    elapsed = time.monotonic() - started
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("error: k: k=100000 is larger than d_sae=") and "Fix: use k <= d_sae" in out.stderr
    assert "Traceback" not in out.stderr
    assert elapsed < 10  # ~0.6 s here (benchmarks/bench_cli.py); generous for a loaded machine
    assert redis_db("results").zcard(keys.jobs_index()) == 0


def test_train_refuses_a_config_file_that_is_not_an_object(redis_db, tmp_path):
    config = tmp_path / "cfg.json"
    config.write_text("[1, 2]")
    out = run_cli("train", "--config", str(config))
    assert out.returncode == 1 and "error: --config:" in out.stderr and "Fix:" in out.stderr


@pytest.mark.parametrize(
    "progress, state, text",
    [
        (TrainingProgress(step=500, total_steps=977, phase="training"), "running", "51% 500/977"),
        (TrainingProgress(step=650, total_steps=977, phase="training"), "succeeded", "100%"),
        (TrainingProgress(phase="caching activations", step=0, total_steps=977, phase_done=30, phase_total=120),
         "running", "caching activations 25%"),
        (DownloadProgress(downloaded_bytes=5, total_bytes=20, files_done=0, files_total=3), "running", "25%"),
        (FeaturesProgress(phase="extracting", done=1, total=4), "running", "extracting 25%"),
        (DatasetProgress(stage="tokenize", tokens_done=10, tokens_total=40), "running", "25%"),
        ({"elapsed": 1.0, "total": 4.0, "fraction": 0.25}, "running", "25%"),  # diagnostics.sleep's own snapshot
        (None, "queued", "-"),
        (None, "succeeded", "100%"),
    ],
)
def test_progress_reads_as_a_percentage(progress, state, text):
    """The job record's snapshot is what tasks/reporting.py writes: an event's data and its type."""
    if isinstance(progress, EventData):
        progress = {**progress.to_data(), "event": progress.type, "attempt": 1, "time": 0.0}
    assert progress_text(progress, state) == text


def test_table_cells_are_one_line_and_short():
    assert clean("a\nb\tc\x1b[31m") == "a\\nb\\tc\\x1b[31m"
    assert len(clean("x" * 500)) == 40
    text = table([{"id": "x\ny", "state": "ok"}], ["id", "state"])
    assert text.count("\n") == 1


def test_the_terminal_bar_reads_a_preparation_phases_own_progress():
    """training.progress events of a preparation phase carry phase_done/phase_total (tasks.training)."""
    from mistudio.tasks.training import ProgressEvents

    events = ProgressEvents(clock=iter([0.0, 2.0]).__next__)
    events({"phase": "caching activations", "tokens_done": 0, "tokens_total": 1000})
    event = events({"phase": "caching activations", "tokens_done": 250, "tokens_total": 1000})
    assert event.position() == ("caching activations", 250, 1000, "tokens") and event.position().fraction == 0.25
