"""The cache: the seed's keys and TTLs, hit/miss counting, invalidation, the stampede guard,
and a full Redis (noeviction) that degrades cache writes but never touches jobs."""

from __future__ import annotations

import threading
import time

import pytest

from mistudio import cache, events, jobs
from mistudio.redis import keys

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    "namespace, params, key, ttl",
    [
        ("features", {"training_id": "tr_1"}, "cache:features:tr_1:stats", 3600),
        ("model", {"model_id": "gpt2"}, "cache:model:gpt2:metadata", 86400),
        ("dataset", {"dataset_id": "owt"}, "cache:dataset:owt:stats", 86400),
        ("correlations", {"training_id": "tr_1", "k": 100}, "cache:correlations:tr_1:top100", 7200),
        ("checkpoints", {"training_id": "tr_1"}, "cache:checkpoints:tr_1:list", 300),
        ("api", {"path": "/api/datasets"}, "cache:api:/api/datasets", 60),
    ],
)
def test_keys_and_ttls_follow_the_seed(redis_db, namespace, params, key, ttl):
    value = {"architecture": "GPT2", "layers": 12} if namespace == "model" else {"total": 16384, "avg": 0.023}
    assert cache.get_or_compute(namespace, lambda: value, **params) == value
    client = redis_db("cache")
    assert ttl - 2 <= client.ttl(key) <= ttl
    assert ttl * 1000 - 2000 <= client.pttl(key) <= ttl * 1000
    if namespace == "model":  # the seed keeps model metadata as a hash
        assert client.type(key) == "hash" and client.hget(key, "layers") == "12"
    assert cache.get_or_compute(namespace, lambda: pytest.fail("recomputed on a hit"), **params) == value


def test_hit_rate_counts_hits_and_misses(redis_db):
    calls = []
    for _ in range(4):
        cache.get_or_compute("dataset", lambda: calls.append(1) or {"tokens": 5}, dataset_id="d")
    assert len(calls) == 1
    assert cache.stats("dataset") == {"hits": 3, "misses": 1, "stale": 0, "uncached": 0}
    assert cache.hit_rate("dataset") == 75.0
    assert redis_db("cache").hgetall("cache:stats:dataset") == {"hits": "3", "misses": "1"}


def test_the_decorator_and_its_invalidate(redis_db):
    calls = []

    @cache.cached("api", key=lambda path: {"path": path})
    def answer(path):
        calls.append(path)
        return {"path": path, "n": len(calls)}

    assert answer("/a") == {"path": "/a", "n": 1}
    assert answer("/a")["n"] == 1
    answer.invalidate("/a")
    assert answer("/a")["n"] == 2


def test_a_new_checkpoint_invalidates_the_training_caches(redis_db):
    for namespace, extra in (("features", {}), ("checkpoints", {}), ("correlations", {"k": 10}),
                             ("correlations", {"k": 50})):
        cache.get_or_compute(namespace, lambda: {"old": True}, training_id="tr_x", **extra)
    cache.get_or_compute("features", lambda: {"other": True}, training_id="tr_y")
    assert cache.invalidate_training("tr_x") >= 4
    client = redis_db("cache")
    assert not client.exists("cache:features:tr_x:stats", "cache:checkpoints:tr_x:list",
                             "cache:correlations:tr_x:top10", "cache:correlations:tr_x:top50")
    assert client.exists("cache:features:tr_y:stats")


def test_clear_a_namespace_with_scan(redis_db):
    for i in range(1200):
        cache.get_or_compute("api", lambda: {"i": 1}, path=f"/p/{i}")
    cache.get_or_compute("dataset", lambda: {"keep": 1}, dataset_id="d")
    assert cache.clear("api") == 2400  # values and their stale copies
    assert redis_db("cache").exists("cache:dataset:d:stats")


def test_stampede_guard_computes_once_for_ten_concurrent_callers(redis_db):
    calls = []

    def slow():
        calls.append(1)
        time.sleep(1.0)
        return {"answer": 42}

    results = []
    threads = [threading.Thread(target=lambda: results.append(
        cache.get_or_compute("correlations", slow, training_id="tr_s", k=100))) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results == [{"answer": 42}] * 10


def test_stale_copy_is_served_while_one_caller_recomputes(redis_db):
    cache.get_or_compute("checkpoints", lambda: ["ckpt-1"], training_id="tr_st")
    redis_db("cache").delete("cache:checkpoints:tr_st:list")  # as if its TTL ran out
    started = threading.Event()

    def recompute():
        started.set()
        time.sleep(1.0)
        return ["ckpt-1", "ckpt-2"]

    slow = threading.Thread(target=lambda: cache.get_or_compute("checkpoints", recompute, training_id="tr_st"))
    slow.start()
    started.wait(5)
    t0 = time.monotonic()
    assert cache.get_or_compute("checkpoints", lambda: pytest.fail("second computation"),
                                training_id="tr_st") == ["ckpt-1"]
    assert time.monotonic() - t0 < 0.5  # served at once, not after the recomputation
    slow.join()
    assert cache.get_or_compute("checkpoints", list, training_id="tr_st") == ["ckpt-1", "ckpt-2"]


def test_a_full_redis_keeps_jobs_and_serves_cache_values_uncached(redis_db):
    client = redis_db("cache")
    queued = [jobs.submit("diagnostics.echo", {"n": i}) for i in range(5)]
    original = client.config_get("maxmemory")["maxmemory"]
    used = int(client.info("memory")["used_memory"])
    with events.Subscription(keys.SYSTEM_ALERTS_CHANNEL) as alerts:
        alerts.get(timeout=0.2)
        try:
            client.config_set("maxmemory", str(used + 256 * 1024))
            with pytest.raises(Exception, match="OOM|maxmemory"):
                for i in range(100000):
                    client.set(f"ballast:{i}", "x" * 1000)
            big = {"values": list(range(2000))}
            assert cache.get_or_compute("features", lambda: big, training_id="tr_full") == big
            assert not client.exists("cache:features:tr_full:stats")
            assert cache.stats("features")["uncached"] >= 1
            alert = alerts.get(timeout=5)
            assert alert is not None and alert.type == "system.alert" and alert.data["source"] == "cache"
            assert alert.seq == 0  # published live; Redis could store nothing
        finally:
            client.config_set("maxmemory", original)
    for i, job in enumerate(queued):  # nothing was evicted
        assert job.status() == "queued" and job.record()["params"] == {"n": i}
    assert redis_db("queue").zcard(keys.queue_pending("cpu")) == 5
