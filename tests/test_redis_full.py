"""A full Redis does not hide the workers: the cache stops at its share of maxmemory, so
heartbeats, the leader's lease and jobs keep their room; a submit Redis refuses for memory
says "Redis is full" with a fix, leaves nothing behind and gives its rate-limit slot back."""

from __future__ import annotations

import time
from contextlib import contextmanager

import pytest

from helpers import wait_for
from mistudio import cache, jobs, lifecycle, monitoring
from mistudio.coord import leader
from mistudio.coord.heartbeat import healthy_workers
from mistudio.redis import keys
from mistudio.redis.connection import RedisFull
from mistudio.settings import get_settings

pytestmark = pytest.mark.timeout(240)

FAST = dict(MISTUDIO_HEARTBEAT_INTERVAL=0.5, MISTUDIO_HEARTBEAT_TTL=3, MISTUDIO_STATUS_INTERVAL=1)


@contextmanager
def maxmemory(admin, value: int):
    original = admin.config_get("maxmemory")["maxmemory"]
    admin.config_set("maxmemory", str(value))
    try:
        yield
    finally:
        admin.config_set("maxmemory", original)


def _fill_cache(client) -> int:
    """Cache values through mistudio.cache until it stops writing; how many it stored."""
    value = {"blob": "y" * 50_000}
    for i in range(10_000):
        cache.get_or_compute("api", lambda: value, path=f"/fill/{i}")
        if not client.exists(f"cache:api:/fill/{i}"):
            return i
    pytest.fail("the cache never stopped writing")


def test_workers_keep_beating_and_leading_when_the_cache_filled_redis(workers, redis_db, redis_admin):
    workers.start("cpu", lease=3, **FAST)
    workers.start("io", lease=3, **FAST)
    locks, cache_db = redis_db("locks"), redis_db("cache")
    used = int(cache_db.info("memory")["used_memory"])
    limit = used + 16 * 2**20
    with maxmemory(redis_admin(), limit):
        stored = _fill_cache(cache_db)
        assert stored > 20
        assert int(cache_db.info("memory")["used_memory"]) <= get_settings().cache_memory_share * limit + 2**20
        before = leader.current(locks)
        assert before is not None
        time.sleep(4)  # past the leader's lease (3 s) and the heartbeats' TTL (3 s): all renewed meanwhile
        beats = healthy_workers(locks)
        assert len(beats) == 2 and all(w["age"] < 2.5 for w in beats)
        now = leader.current(locks)
        assert now is not None and now["term"] == before["term"]  # the same lease, renewed, never lost
        job = jobs.submit("diagnostics.echo", {"after": "the cache filled Redis"})
        assert job.result(timeout=60) is not None
        status = lifecycle.status()
        assert len(status["workers"]) == 2 and status["leader"]["term"] == before["term"]
        assert cache.stats("api")["uncached"] >= 1


def _downloads_counted(client) -> int:
    return client.zcard(keys.ratelimit_window("global", "downloads", 3600))


def test_a_submit_at_a_full_redis_says_so_and_gives_its_rate_limit_slot_back(redis_db, redis_admin):
    ratelimit, results = redis_db("ratelimit"), redis_db("results")
    jobs.submit("download_model", {"model_id": "org/before"})
    assert _downloads_counted(ratelimit) == 1
    used = int(results.info("memory")["used_memory"])
    with maxmemory(redis_admin(), used // 2):  # below what Redis holds: every growing write is refused
        for i in range(12):  # more than the 10 downloads an hour: each refusal gave its slot back
            started = time.monotonic()
            with pytest.raises(RedisFull) as info:
                jobs.submit("download_model", {"model_id": f"org/full-{i}"}, job_id=f"dl_full_{i}")
            assert time.monotonic() - started < 1
            message = str(info.value)
            assert message.startswith("Redis is full") and "Fix:" in message and "mistudio cache clear" in message
            assert "maxmemory" in message and f"dl_full_{i}" in message
            assert not results.exists(keys.job(f"dl_full_{i}"))  # nothing half-recorded
        assert _downloads_counted(ratelimit) == 1
    assert [j["params"]["model_id"] for j in jobs.list_jobs()] == ["org/before"]  # only the one before
    for i in range(9):  # the hour's other 9 downloads are all still there
        jobs.submit("download_model", {"model_id": f"org/after-{i}"})
    assert _downloads_counted(ratelimit) == 10


def test_the_leader_still_publishes_the_memory_alert_when_redis_is_full(redis_db, redis_admin):
    from mistudio import events

    client = redis_db("queue")
    with events.Subscription(keys.SYSTEM_ALERTS_CHANNEL) as alerts:
        alerts.get(timeout=0.2)
        with maxmemory(redis_admin(), int(client.info("memory")["used_memory"]) // 2):
            _, raised = monitoring.Monitor().tick()  # its bookkeeping writes are refused; no exception
            assert any(a["name"] == "memory_usage" and a["level"] == "critical" for a in raised)
            alert = wait_for(lambda: alerts.get(timeout=1), timeout=10, message="the alert")
    assert alert.data["name"] == "memory_usage" and alert.seq == 0  # live only: Redis could store nothing
