"""The `steer` job: checked at submit, counted against the seed's generations tier, run on real gpu
workers one at a time, its tokens streamed on generation:{id}; `mistudio steer` in the terminal.
A tiny random GPT-2 run (trained for a few steps here, with its feature analysis)."""

from __future__ import annotations

import json
import shutil
import time
from types import SimpleNamespace

import pytest
from helpers import run_cli
from ml_helpers import analysed_gpt2_run

import mistudio.generation as generation
from mistudio import events, limits
from mistudio.errors import InvalidInput
from mistudio.redis import keys
from mistudio.settings import get_settings

pytestmark = pytest.mark.timeout(300)

TRAINING_ID = "tr_steerjob"
PROMPT = "The function returns"


@pytest.fixture(scope="module")
def steer_run(mistudio_home, tmp_path_factory):
    """A trained run on the tiny GPT-2 with its feature analysis, and an encoder (MiniLM) twin."""
    from mistudio.features import load_feature_table

    run_dir = analysed_gpt2_run(TRAINING_ID, tmp_path_factory.mktemp("steer-gpt2"))
    shutil.copytree(run_dir, get_settings().runs_dir / "tr_steer_unanalysed", ignore=shutil.ignore_patterns("features"))
    # The same SAE said to belong to the bundled encoder: a run whose model has no LM head.
    encoder = get_settings().runs_dir / "tr_steer_encoder"
    shutil.copytree(run_dir, encoder, dirs_exist_ok=True)
    cfg_path = encoder / "sae" / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model_name"] = cfg["metadata"]["model_name"] = cfg["metadata"]["mistudio_config"]["model"] = None
    cfg_path.write_text(json.dumps(cfg))
    table = load_feature_table(run_dir)
    live = int(table[table["max"] > 0]["feature"].iloc[0])
    return SimpleNamespace(dir=run_dir, feature=live, d_sae=len(table))


def _submitted(redis_db) -> int:
    return redis_db("results").zcard(keys.jobs_index())


def _refused(field: str, run, **request) -> InvalidInput:
    started = time.monotonic()
    with pytest.raises(InvalidInput) as info:
        generation.steer(**{"training_id": TRAINING_ID, "prompt": PROMPT, "features": {run.feature: 1.0}, **request})
    assert time.monotonic() - started < 1.0  # metadata only, no torch
    assert info.value.field == field, str(info.value)
    assert info.value.fix
    return info.value


def test_bad_requests_are_refused_at_submit_naming_the_field_and_nothing_is_queued(redis_db, steer_run):
    run = steer_run
    err = _refused("features[0].index", run, features={run.d_sae: 2.0})
    assert f"0..{run.d_sae - 1}" in err.fix
    err = _refused("training_id", run, training_id="tr_steer_encoder")
    assert "no language-model head" in err.problem and "gpt2" in err.fix
    _refused("training_id", run, training_id="tr_nosuchrun")
    _refused("prompts[0]", run, prompt="")
    _refused("prompts", run, prompt=None)
    _refused("features[0].strength", run, features={run.feature: float("nan")})
    _refused("sweep[1]", run, sweep=[1.0, float("inf")])
    err = _refused("max_new_tokens", run, max_new_tokens=300)  # the tiny GPT-2's context is 256
    assert "256" in err.problem
    _refused("method", run, method="boost")
    err = _refused("strength_unit", run, training_id="tr_steer_unanalysed", strength_unit="max_activation")
    assert "mistudio features tr_steer_unanalysed" in err.fix and "raw" in err.fix
    assert _submitted(redis_db) == 0


def test_the_21st_steer_in_an_hour_is_refused_with_retry_after_and_not_queued(redis_db, steer_run):
    for i in range(20):
        if i == 10:
            time.sleep(1.05)  # the API tier allows 10 a second
        generation.steer(TRAINING_ID, PROMPT, {steer_run.feature: 1.0}, seed=i)
    time.sleep(1.05)
    with pytest.raises(limits.RateLimited, match="generations") as info:
        generation.steer(TRAINING_ID, PROMPT, {steer_run.feature: 1.0}, seed=20)
    err = info.value
    assert (err.tier, err.limit, err.window) == ("generations", 20, 3600)
    assert 3500 < err.retry_after <= 3600 and err.headers()["Retry-After"]
    assert _submitted(redis_db) == 20
    assert redis_db("queue").zcard(keys.queue_pending("gpu")) == 20


def _stream(job_id: str) -> list:
    return events.history(keys.generation_channel(job_id))


def test_streamed_tokens_equal_the_returned_completions(workers, steer_run):
    workers.start("gpu", lease=10)
    job = generation.steer(TRAINING_ID, prompts=[PROMPT, "In the beginning"], features={3: 2.0}, sweep=[0.0, 3.0],
                           strength_unit="raw",
                           max_new_tokens=10, top_p=0.9, seed=5)
    result = job.result(timeout=180)
    record = job.record()
    assert (record["queue"], record["task"]) == ("gpu", "steer") and job.id.startswith("gen_")
    assert job.channel() == keys.generation_channel(job.id) == f"generation:{job.id}"
    stream = _stream(job.id)
    assert stream[-1].type == "generation.completed" and [e.type for e in stream[:-1]] == ["generation.token"] * (
        len(stream) - 1)
    tokens = [e.payload for e in stream[:-1]]  # typed: steered_index None for the default branch
    for p, entry in enumerate(result["prompts"]):
        assert entry["prompt"] == [PROMPT, "In the beginning"][p]
        branches = [("default", None, entry["default"])] + [("steered", i, s) for i, s in enumerate(entry["steered"])]
        for branch, index, completion in branches:
            mine = [t for t in tokens if (t.prompt_index, t.branch, t.steered_index) == (p, branch, index)]
            assert [t.position for t in mine] == list(range(len(completion["token_ids"])))
            assert [t.token_id for t in mine] == completion["token_ids"]
            assert [t.token for t in mine] == completion["tokens"]
            assert [t.logprob for t in mine] == pytest.approx(completion["logprobs"])
        assert [s["strength"] for s in entry["steered"]] == [0.0, 3.0]
        assert entry["steered"][0]["token_ids"] == entry["default"]["token_ids"]  # strength 0, same seed
    assert stream[-1].data["n_tokens"] == len(tokens)


def test_a_second_steer_waits_its_turn(workers, steer_run):
    workers.start("gpu", lease=10)
    workers.start("gpu", lease=10)  # two workers on one device: the slot and the GPU lock serialize them
    both = [generation.steer(TRAINING_ID, PROMPT, {steer_run.feature: 1.0}, max_new_tokens=24, seed=s)
            for s in (1, 2)]
    spans = sorted((r["started"], r["finished"]) for r in (j.result(timeout=240) for j in both))
    assert spans[1][0] >= spans[0][1], spans


def test_the_cli_streams_default_and_steered_side_by_side(workers, steer_run):
    workers.start("gpu", lease=10)
    args = ["steer", TRAINING_ID, "--feature", "3:2.5", "--prompt", PROMPT, "--unit", "raw", "--max-new-tokens", "8",
            "--seed", "4"]
    as_json = run_cli(*args, "--json", timeout=180)
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)["result"]["prompts"][0]
    shown = run_cli(*args, timeout=180)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "default" in out and "steered 3:2.5" in out
    n_rows = max(len(result["default"]["token_ids"]), len(result["steered"][0]["token_ids"]))
    rows = [line for line in out.splitlines() if line[:6].strip().isdigit()]
    assert [int(line[:6]) for line in rows] == list(range(n_rows))  # one streamed line per position
    assert f"default: {len(result['default']['token_ids'])} tokens" in out  # same seed: the same completion
    bad = run_cli("steer", TRAINING_ID, "--feature", "3:x", "--prompt", PROMPT)
    assert bad.returncode == 1 and "--feature" in bad.stderr and "123:4.0" in bad.stderr
