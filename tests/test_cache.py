"""The cache: the seed's keys and TTLs, hit/miss counting, invalidation, the stampede guard,
and a full Redis (noeviction) that degrades cache writes but never touches jobs."""

from __future__ import annotations

import threading
import time

import pytest

from helpers import run_cli, wait_for
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


def test_a_caller_overtaken_between_its_miss_and_the_guard_takes_the_stored_value(redis_db, monkeypatch):
    """The race behind a rare double computation: a caller misses, and before it takes the guard
    another caller computes, stores and lets go. It must use that value, not compute again."""
    overtaken = threading.Event()
    count = cache._count

    def miss_then_stall(client, namespace, field):  # holds the late caller right after its miss
        count(client, namespace, field)
        if field == "misses" and threading.current_thread().name == "late":
            overtaken.wait(30)

    monkeypatch.setattr(cache, "_count", miss_then_stall)
    calls, results = [], []

    def compute():
        calls.append(1)
        return {"tokens": 7}

    late = threading.Thread(name="late", target=lambda: results.append(
        cache.get_or_compute("dataset", compute, dataset_id="race")))
    late.start()
    wait_for(lambda: cache.stats("dataset")["misses"] == 1, message="the late caller's miss")
    assert cache.get_or_compute("dataset", compute, dataset_id="race") == {"tokens": 7}  # computes, stores
    overtaken.set()
    late.join(30)
    assert results == [{"tokens": 7}] and len(calls) == 1


def test_a_full_redis_keeps_jobs_and_serves_cache_values_uncached(redis_db, redis_admin, monkeypatch):
    client, admin = redis_db("cache"), redis_admin("cache")
    # The cache samples INFO at most once a second: a sample from before maxmemory was lowered would
    # let a write through whenever Redis has just freed a few bytes (a client buffer) below its limit.
    monkeypatch.setattr(cache, "BUDGET_SAMPLE_SECONDS", 0.0)
    queued = [jobs.submit("diagnostics.echo", {"n": i}) for i in range(5)]
    original = admin.config_get("maxmemory")["maxmemory"]
    used = int(client.info("memory")["used_memory"])
    with events.Subscription(keys.SYSTEM_ALERTS_CHANNEL) as alerts:
        alerts.get(timeout=0.2)
        try:
            admin.config_set("maxmemory", str(used + 256 * 1024))
            with pytest.raises(Exception, match="OOM|maxmemory"):
                for i in range(100000):  # ballast outside miStudio's keys: only the admin may write it
                    admin.set(f"ballast:{i}", "x" * 1000)
            big = {"values": list(range(2000))}
            assert cache.get_or_compute("features", lambda: big, training_id="tr_full") == big
            assert not client.exists("cache:features:tr_full:stats")
            assert cache.stats("features")["uncached"] >= 1
            alert = alerts.get(timeout=5)
            assert alert is not None and alert.type == "system.alert" and alert.data["source"] == "cache"
            assert "mistudio cache clear" in alert.data["message"]
            assert alert.seq == 0  # published live; Redis could store nothing
        finally:
            admin.config_set("maxmemory", original)
    for i, job in enumerate(queued):  # nothing was evicted
        assert job.status() == "queued" and job.record()["params"] == {"n": i}
    assert redis_db("queue").zcard(keys.queue_pending("cpu")) == 5


def test_the_cache_stops_writing_at_its_share_of_maxmemory(redis_db, redis_admin, monkeypatch):
    admin, client = redis_admin("cache"), redis_db("cache")
    original = admin.config_get("maxmemory")["maxmemory"]
    used = int(client.info("memory")["used_memory"])
    maxmemory = used + 8 * 2**20
    monkeypatch.setattr(cache, "BUDGET_SAMPLE_SECONDS", 0.0)  # sample on every write: exact, for the test
    try:
        admin.config_set("maxmemory", str(maxmemory))
        value = {"blob": "x" * 20_000}
        stored = 0
        for i in range(2000):
            cache.get_or_compute("api", lambda: value, path=f"/fill/{i}")
            if not client.exists(f"cache:api:/fill/{i}"):
                break
            stored += 1
        else:
            pytest.fail("the cache never stopped writing")
        used_now = int(client.info("memory")["used_memory"])
        assert stored > 50  # it did cache, up to its budget...
        assert used_now <= 0.6 * maxmemory + 64 * 1024  # ...and stopped there (60 %, plus one value's slack)
        assert cache.stats("api")["uncached"] >= 1
        jobs.submit("diagnostics.echo", {"after": "fill"})  # the rest of Redis is still free for jobs
    finally:
        admin.config_set("maxmemory", original)


def test_the_cli_shows_and_clears_the_cache(redis_db):
    cache.get_or_compute("dataset", lambda: {"tokens": 1}, dataset_id="cli")
    cache.get_or_compute("dataset", lambda: {"tokens": 1}, dataset_id="cli")
    stats = run_cli("cache", "stats")
    assert stats.returncode == 0, stats.stderr
    assert "dataset" in stats.stdout and "50.0%" in stats.stdout
    cleared = run_cli("cache", "clear")
    assert cleared.returncode == 0 and "removed" in cleared.stdout
    assert not redis_db("cache").exists("cache:dataset:cli:stats", "cache:dataset:cli:stats:stale")
    assert cache.stats("dataset")["hits"] == 0
