"""The model and dataset jobs: input checked before queueing, real runs on the cpu/io queues."""

from __future__ import annotations

import pytest

from mistudio import events, jobs
from mistudio.errors import InvalidInput
from mistudio.redis import keys

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize(
    "task, params, field",
    [
        ("process_dataset", {"model": "no/such-model-here"}, "model"),
        ("process_dataset", {"context_length": 4096}, "context_length"),
        ("process_dataset", {"context_length": -3}, "context_length"),
        ("process_dataset", {"source": "/definitely/not/here.txt"}, "source"),
        ("download_model", {"model_id": "not a hub id!"}, "model_id"),
        ("download_model", {}, "model_id"),
        ("download_dataset", {"dataset_id": ""}, "dataset_id"),
    ],
)
def test_bad_input_is_refused_before_queueing(redis_db, task, params, field):
    with pytest.raises(InvalidInput) as info:
        jobs.submit(task, params)
    assert info.value.field == field
    assert redis_db("results").zcard(keys.jobs_index()) == 0


def test_an_empty_corpus_is_refused(redis_db, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n\n")
    with pytest.raises(InvalidInput, match="empty corpus"):
        jobs.submit("process_dataset", {"source": str(empty)})


def test_process_dataset_runs_on_the_cpu_queue_with_progress_events(workers, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Paragraph {i} about sparse autoencoders and features." for i in range(200)))
    workers.start("cpu", lease=10)
    job = jobs.submit("process_dataset", {"source": str(corpus), "context_length": 32, "max_tokens": 2000,
                                          "dataset_id": "tiny-corpus"})
    result = job.result(timeout=120)
    assert result["dataset_id"] == "tiny-corpus"
    stats = result["stats"]
    assert stats["total_tokens"] > 0 and stats["samples"] > 0 and stats["vocab_size"] > 0
    history = events.history(keys.dataset_process_channel("tiny-corpus"))
    assert history and all(e.type == "dataset.progress" for e in history)
    assert history[-1].data["done"] is True


def test_download_without_a_network_fails_clearly(workers):
    workers.start("io", lease=10)
    job = jobs.submit("download_model", {"model_id": "openai-community/gpt2"})
    with pytest.raises(jobs.JobFailed) as info:
        job.result(timeout=120)
    message = str(info.value).lower()
    assert "network" in message or "reach" in message
