"""Bad input is refused before anything is queued, naming the field and the fix; what can only be
known in the worker (a loss that goes NaN, a device without CUDA) fails the job with a clear error;
and a message crafted straight into the queue is checked again by the worker, so no parameter
that becomes a path can write outside MISTUDIO_HOME. Real Redis, real workers, real models."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from helpers import wait_for
from ml_helpers import save_tiny_gpt2
from mistudio import jobs
from mistudio.errors import InvalidInput, TrainingDiverged
from mistudio.queue import records
from mistudio.queue.apps import huey_app, make_task
from mistudio.redis import keys
from mistudio.settings import get_settings

pytestmark = pytest.mark.timeout(300)


def _nothing_queued(redis_db) -> None:
    assert redis_db("results").zcard(keys.jobs_index()) == 0  # no job record
    assert all(redis_db("queue").zcard(keys.queue_pending(q)) == 0 for q in ("gpu", "io", "cpu"))


def _refused(redis_db, task: str, params, field: str, **kw) -> InvalidInput:
    started = time.monotonic()
    with pytest.raises(InvalidInput) as info:
        jobs.submit(task, params, **kw)
    elapsed = time.monotonic() - started
    assert info.value.field == field, str(info.value)
    assert "Fix:" in str(info.value) and info.value.fix
    assert elapsed < 5, f"refusing took {elapsed:.1f} s"  # ~10 ms warm; generous for a loaded 2-core machine
    _nothing_queued(redis_db)
    return info.value


# --- files that are not what they claim --------------------------------------------------


def _model_folder(tmp_path: Path, config_text: str | None, weights: bytes | None = b"") -> str:
    folder = tmp_path / "model"
    folder.mkdir()
    if config_text is not None:
        (folder / "config.json").write_text(config_text)
    if weights is not None:
        (folder / "model.safetensors").write_bytes(weights)
    return str(folder)


_GPT2_CONFIG = json.dumps({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "vocab_size": 512})


@pytest.mark.parametrize(
    "config_text, weights, words",
    [
        ("{not json", b"", "is not a readable JSON file"),
        ("[1, 2]", b"", "holds a JSON list"),
        ("{}", b"", "has no model_type"),
        (json.dumps({"model_type": "gpt2"}), b"", "no positive integer hidden_size / n_embd"),
        (_GPT2_CONFIG, None, "folder without weights"),
        (_GPT2_CONFIG, b"", "damaged weights file model.safetensors"),  # 0 bytes
        (_GPT2_CONFIG, b"\xff" * 64, "damaged weights file"),  # no valid header
    ],
)
def test_a_broken_model_folder_is_refused(redis_db, tmp_path, config_text, weights, words):
    error = _refused(redis_db, "train_sae", {"model": _model_folder(tmp_path, config_text, weights)}, "model")
    assert words in str(error)


def test_an_empty_or_corrupt_parquet_is_refused(redis_db, tmp_path):
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    assert "is not a readable parquet file" in str(_refused(redis_db, "train_sae", {"dataset": str(empty)}, "dataset"))
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1" + bytes(range(256)) * 8 + b"PAR1")
    _refused(redis_db, "train_sae", {"dataset": str(corrupt)}, "dataset")
    _refused(redis_db, "process_dataset", {"source": str(corrupt)}, "source")


def test_a_parquet_whose_text_column_is_not_text_is_refused(redis_db, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [1, 2, 3]}), tmp_path / "numbers.parquet")
    error = _refused(redis_db, "process_dataset", {"source": str(tmp_path / "numbers.parquet")}, "text_field")
    assert "not text" in str(error)


def test_a_binary_file_named_txt_is_refused(redis_db, tmp_path):
    binary = tmp_path / "weights.txt"
    binary.write_bytes(bytes(range(256)) * 400)
    assert "is not text" in str(_refused(redis_db, "train_sae", {"dataset": str(binary)}, "dataset"))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 ".encode("latin-1") * 5000)  # every 5th byte invalid UTF-8, no NUL
    assert "is not UTF-8 text" in str(_refused(redis_db, "process_dataset", {"source": str(latin)}, "source"))
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_bytes(b"\x00\x01\x02" * 1000)
    _refused(redis_db, "process_dataset", {"source": str(jsonl)}, "source")


def test_a_text_file_with_a_stray_byte_is_still_text(redis_db, tmp_path):
    corpus = tmp_path / "mostly.txt"
    corpus.write_bytes(("Sparse autoencoders find features. " * 300).encode() + b"\xe9" + b" more text.\n")
    job = jobs.submit("process_dataset", {"source": str(corpus)})
    assert job.record()["state"] == "queued"


def test_a_path_longer_than_the_os_allows_is_refused(redis_db):
    long = "/tmp/" + "x" * 5000
    assert "longer than the OS allows" in str(_refused(redis_db, "train_sae", {"dataset": long}, "dataset"))
    _refused(redis_db, "train_sae", {"model": long}, "model")
    _refused(redis_db, "process_dataset", {"source": long + ".txt"}, "source")


# --- numbers, types and sizes ------------------------------------------------------------


@pytest.mark.parametrize(
    "params, field, words",
    [
        ({"seed": -1}, "seed", "0..4294967295"),
        ({"seed": 1e23}, "seed", "valid integer"),
        ({"seed": 2**64}, "seed", "0..4294967295"),
        ({"lr": 1e9}, "lr", "too large"),
        ({"lr": "0.001"}, "lr", "valid number"),
        ({"steps": 10**12}, "steps", "more than the most"),
        ({"total_tokens": 10**15}, "total_tokens", "more than"),
        ({"expansion_factor": 10**5}, "expansion_factor", "more than the most"),
        ({"d_sae": 10**9}, "d_sae", "more than the most"),
        ({"k": True}, "k", "valid integer, got True (bool)"),
        ({"k": 1.0}, "k", "valid integer"),
        ({"batch_size": "512"}, "batch_size", "valid integer"),
        ({"sparse_kernels": "yes"}, "sparse_kernels", "valid boolean"),
        ({"layer": True}, "layer", "got True"),
        ({"layer": 2, "hook_point": "blocks.1.hook_resid_post"}, "layer", "not both"),
        ({"device": "cuda\n"}, "device", "unknown device"),
        ({"hook_point": "blocks.1.hook_resid_post\n"}, "hook_point", "not a hook point name"),
        ({"model": 7}, "model", "must be a hub id or folder string"),
    ],
)
def test_bad_numbers_and_types_are_refused(redis_db, params, field, words):
    assert words in str(_refused(redis_db, "train_sae", params, field))


def test_sizes_are_checked_against_the_memory_budget(redis_db, monkeypatch):
    # 384 x 24,576 (expansion 64) with 4,096 tokens a step: ~1.1 GiB at the least, over 512 MiB.
    error = _refused(redis_db, "train_sae", {"expansion_factor": 64, "batch_size": 4096}, "batch_size")
    text = str(error)
    assert "384 x 24,576" in text and "MISTUDIO_MEMORY_BUDGET = 512.0 MiB" in text and "GiB" in text
    assert "raise MISTUDIO_MEMORY_BUDGET" in text
    _refused(redis_db, "train_sae", {"expansion_factor": 256}, "expansion_factor")  # parameters dominate
    monkeypatch.setenv("MISTUDIO_MEMORY_BUDGET", str(4 * 2**30))  # a device with the memory: accepted
    assert jobs.submit("train_sae", {"expansion_factor": 64, "batch_size": 4096}).record()["state"] == "queued"


@pytest.mark.parametrize("params", [["k", 32], "k=32", 42, ("k", 32)])
def test_params_that_are_not_a_dict_are_refused(redis_db, params):
    assert "must be a dict" in str(_refused(redis_db, "train_sae", params, "params"))


def test_unknown_parameters_of_data_tasks_are_refused(redis_db):
    _refused(redis_db, "download_model", {"model_id": "org/name", "revison": "main"}, "revison")
    _refused(redis_db, "process_dataset", {"sourse": "x.txt"}, "sourse")


@pytest.mark.parametrize("job_id", ["abc\n", "abc\ndef", "a" * 65, "../x", ""])
def test_a_job_id_that_is_not_one_line_of_safe_characters_is_refused(redis_db, job_id):
    _refused(redis_db, "diagnostics.echo", {}, "job_id", job_id=job_id)


def test_errors_echo_a_short_preview_of_a_huge_value(redis_db):
    huge = "m" * 100_000
    for task, params, field in [("train_sae", {"model": huge}, "model"), ("train_sae", {"hook_point": huge}, "hook_point"),
                                ("download_model", {"model_id": huge}, "model_id"),
                                ("process_dataset", {"dataset_id": huge}, "dataset_id")]:
        error = _refused(redis_db, task, params, field)
        assert len(str(error)) < 800 and "100,000 characters" in str(error)


# --- names that become paths -------------------------------------------------------------


@pytest.mark.parametrize(
    "task, params, field",
    [
        ("download_dataset", {"dataset_id": "org/data", "split": "../../../../../x"}, "split"),
        ("download_dataset", {"dataset_id": "org/data", "config": "../../x"}, "config"),
        ("download_dataset", {"dataset_id": "org/data", "split": "a/b"}, "split"),
        ("download_dataset", {"dataset_id": "org/../../x"}, "dataset_id"),
        ("download_model", {"model_id": "org/x/../y"}, "model_id"),
        ("process_dataset", {"dataset_id": "../../evil"}, "dataset_id"),
        ("process_dataset", {"dataset_id": "/etc/evil"}, "dataset_id"),
        ("process_dataset", {"split": ".."}, "split"),
        ("extract_features", {"training_id": "../../runs/x"}, "training_id"),
        ("extract_features", {"training_id": ["tr_1"]}, "training_id"),
    ],
)
def test_names_that_would_leave_their_folder_are_refused(redis_db, task, params, field):
    _refused(redis_db, task, params, field)


def test_the_ml_core_refuses_them_too(mistudio_home):
    from mistudio.data.download import dataset_dir
    from mistudio.data.processed import ProcessedDataset

    for split, config in (("../../../x", None), ("train", "../y"), ("train\n", None)):
        with pytest.raises(InvalidInput):
            dataset_dir("org/data", split, config)
    with pytest.raises(InvalidInput, match="dataset_id"):
        ProcessedDataset.load("../../../etc")


# --- what only the worker can know -------------------------------------------------------


def test_a_loss_that_goes_nan_stops_training_before_anything_is_reported_or_saved(tmp_path):
    from mistudio.sae.config import TrainingConfig
    from mistudio.sae.trainer import Trainer

    batches = [torch.randn(64, 16) for _ in range(12)]
    batches[6][3, 2] = float("nan")  # the 7th step's input: e.g. a float16 model that overflowed
    reports = []
    cfg = TrainingConfig(hook_point="blocks.0.hook_resid_post", d_in=16, d_sae=64, k=4, batch_size=64, steps=12,
                         log_every=5, checkpoint_every=5)
    with pytest.raises(TrainingDiverged) as info:
        Trainer(cfg, tmp_path, on_progress=reports.append).train(iter(batches))
    assert info.value.step == 7 and info.value.field == "lr"
    assert "loss became NaN at step 7" in str(info.value) and "Fix: lower lr" in str(info.value)
    assert [r["step"] for r in reports] == [5]  # the report due at step 10 never went out with NaN in it
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000000005"]


def _huge_gpt2(folder: Path) -> Path:
    """A tiny GPT-2 whose embeddings are ~1e20: finite activations whose squared error overflows float32."""
    from transformers import GPT2LMHeadModel

    save_tiny_gpt2(folder)
    model = GPT2LMHeadModel.from_pretrained(folder)
    with torch.no_grad():
        model.transformer.wte.weight.normal_(0, 1e20)
    model.save_pretrained(folder)
    return folder


def _crafted(queue: str, task: str, params: dict, priority: int) -> jobs.Job:
    """Straight into the queue through Huey, as another device (or an attacker) sharing the Redis could."""
    job_id = f"crafted_{uuid.uuid4().hex[:8]}"
    app = huey_app(queue)
    app.enqueue(make_task(app, task, job_id, params, priority))
    return jobs.Job(job_id)


def _failed(job: jobs.Job, timeout: float = 240) -> str:
    # A crafted message has no record until a worker claims it (the worker then writes one).
    wait_for(lambda: records.get(job._results, job.id), timeout=timeout, message=f"a record of {job.id}")
    with pytest.raises(jobs.JobFailed) as info:
        job.result(timeout=timeout)
    assert info.value.state == "failed", info.value
    return info.value.error


def test_gpu_worker_fails_nan_runs_missing_cuda_and_crafted_configs_clearly(workers, tmp_path):
    workers.start("gpu", lease=10)
    model = str(_huge_gpt2(tmp_path / "huge"))
    # The embedding output (no LayerNorm yet) is finite; its squared reconstruction error is not.
    nan_job = jobs.submit("train_sae", {"model": model, "hook_point": "blocks.0.hook_resid_pre", "steps": 20,
                                        "log_every": 5, "checkpoint_every": 10, "normalize_activations": False})
    cuda_job = None if torch.cuda.is_available() else jobs.submit("train_sae", {"device": "cuda", "steps": 5})
    # Valid as a TrainingConfig, but over the memory budget: only the worker's re-validation refuses it.
    crafted = _crafted("gpu", "train_sae", {"hook_point": "blocks.3.hook_resid_post", "expansion_factor": 256}, 10)

    error = _failed(nan_job)
    assert "TrainingDiverged: lr: loss became NaN at step 1 " in error and "Fix: lower lr" in error
    assert not (get_settings().runs_dir / nan_job.id / "checkpoints").exists() or not any(
        (get_settings().runs_dir / nan_job.id / "checkpoints").iterdir())
    if cuda_job is not None:
        error = _failed(cuda_job)
        assert "device: CUDA is not available on device" in error and "Fix: use device='auto'" in error
    error = _failed(crafted)
    assert error.startswith("InvalidInput: expansion_factor:") and "MISTUDIO_MEMORY_BUDGET" in error  # never ran
    assert not (get_settings().runs_dir / crafted.id).exists()


def test_a_crafted_message_with_a_traversal_id_fails_and_writes_nothing_outside_home(workers, tmp_path):
    home = get_settings().home
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Paragraph {i} about features." for i in range(100)))
    escape = f"evil-{uuid.uuid4().hex[:8]}"
    datasets = get_settings().data_dir / "datasets"
    before = sorted(p.name for p in datasets.iterdir()) if datasets.exists() else []
    workers.start("cpu", lease=10)
    job = _crafted("cpu", "process_dataset", {"source": str(corpus), "model": None, "context_length": 32,
                                              "max_tokens": 500, "dataset_id": f"../../../{escape}",
                                              "text_field": "text", "split": "train"}, 3)
    error = _failed(job, timeout=120)
    assert error.startswith("InvalidInput: dataset_id:") and "Fix:" in error
    assert job.record()["attempts"] == 1
    for place in (home.parent, home, home / "data", datasets):
        assert not (place / escape).exists()
    assert (sorted(p.name for p in datasets.iterdir()) if datasets.exists() else []) == before


def test_validating_a_training_imports_neither_torch_nor_transformers():
    code = ("import sys; from mistudio.tasks.training import validate_train_sae; cfg = validate_train_sae({}); "
            "assert cfg['d_in'] == 384, cfg; bad = [m for m in ('torch', 'transformers', 'pandas') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_validated_config_validates_to_itself_in_the_worker(redis_db):
    from mistudio.tasks import get_task
    from mistudio.validation import check_params

    for task, params in [("train_sae", {"architecture": "jumprelu", "expansion_factor": 2}),
                         ("train_sae", {"d_sae": 1000, "k": 8, "layer": 1}),
                         ("download_dataset", {"dataset_id": "org/data", "split": "validation"}),
                         ("process_dataset", {"context_length": 32})]:
        spec = get_task(task)
        once = check_params(spec, params)
        assert check_params(spec, once) == once
