"""`mistudio train`'s options are the training config's fields: every field is a flag, typed, with its help.

Real CLI subprocesses and a real Redis (the job is queued; no worker runs it).
"""

from __future__ import annotations

import json

import pytest

from helpers import run_cli
from mistudio.sae import TrainingConfig

pytestmark = pytest.mark.timeout(180)


def test_every_config_field_is_an_option_with_its_description():
    out = run_cli("train", "--help")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    for name, info in TrainingConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        assert flag in text, flag
        if name != "architecture":
            assert info.description in text, name
    assert "--architecture [relu|topk|batchtopk|jumprelu]" in text
    assert "--l1-coefficient FLOAT the weight of the L1 sparsity penalty (for relu) [default: 5]" in text
    assert "--k INTEGER active latents per token (for topk, batchtopk) [default: the machine profile's]" in text
    assert "--normalize-activations / --no-normalize-activations" in text
    assert "--total-tokens, --tokens INTEGER" in text  # the old --tokens still works
    assert "--layer INTEGER" in text  # not a config field: the CLI turns it into a hook point


def test_generated_options_reach_the_queued_config(redis_db, tmp_path):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"lr": 1e-3, "seed": 7}))
    out = run_cli("train", "--config", str(config), "--architecture", "jumprelu", "--l0-coefficient", "0.5",
                  "--jumprelu-bandwidth", "0.25", "--no-normalize-activations", "--dtype", "float64",
                  "--tokens", "8192", "--batch-size", "256", "--seed", "3", "--json")
    assert out.returncode == 0, out.stderr
    params = json.loads(out.stdout)["config"]
    assert params["architecture"] == "jumprelu" and params["l0_coefficient"] == 0.5
    assert params["jumprelu_bandwidth"] == 0.25 and params["normalize_activations"] is False
    assert params["dtype"] == "float64" and params["steps"] == 32 and params["total_tokens"] == 8192
    assert params["lr"] == 1e-3 and params["seed"] == 3  # the file's value unless an option overrides it
    assert params["sparse_kernels"] is True  # a flag not given leaves the config's default


def test_a_generated_option_refuses_a_field_of_another_architecture(redis_db):
    out = run_cli("train", "--architecture", "relu", "--aux-k", "8")
    assert out.returncode == 1
    assert out.stderr.startswith("error: aux_k: only applies to topk or batchtopk, not architecture 'relu'")
    out = run_cli("train", "--dtype", "int8")
    assert out.returncode == 2 and "'int8' is not one of 'float32', 'float64'" in out.stderr


def test_sweep_options_queue_one_job_with_every_combination(redis_db):
    out = run_cli("train", "--sweep", "k=8,16", "--sweep", "expansion-factor=4,8", "--steps", "20", "--json")
    assert out.returncode == 0, out.stderr
    members = json.loads(out.stdout)["sweep"]
    assert [(m["k"], m["expansion_factor"]) for m in members] == [(8, 4), (8, 8), (16, 4), (16, 8)]
    assert {m["steps"] for m in members} == {20}  # a shared option reaches every member
    out = run_cli("train", "--sweep", "k=8,100000")
    assert out.returncode == 1 and out.stderr.startswith("error: sweep[1].k: k=100000 is larger than d_sae")
    out = run_cli("train", "--sweep", "banana=1,2")
    assert out.returncode == 1 and "'banana' is not a training config field" in out.stderr
