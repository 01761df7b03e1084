"""Redis metrics and alerts: the seed's metrics, its thresholds, `system.alert` events on
`system:alerts`, and `mistudio status`. Real Redis (its maxmemory changed and restored)."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager

import pytest

from helpers import run_cli, wait_for
from mistudio import lifecycle, monitoring
from mistudio.coord.heartbeat import beat
from mistudio.redis import keys

pytestmark = pytest.mark.timeout(120)

SEED_METRICS = {"used_memory_mb", "used_memory_peak_mb", "mem_fragmentation_ratio", "total_commands_processed",
                "instantaneous_ops_per_sec", "connected_clients", "blocked_clients", "rdb_last_save_time",
                "rdb_changes_since_last_save", "connected_slaves", "keyspace_hits", "keyspace_misses", "evicted_keys"}


@contextmanager
def server_config(client, **settings):
    """CONFIG SET on the test server, restored afterwards whatever happens."""
    saved = {name: client.config_get(name.replace("_", "-"))[name.replace("_", "-")] for name in settings}
    try:
        for name, value in settings.items():
            client.config_set(name.replace("_", "-"), value)
        yield
    finally:
        for name, value in saved.items():
            client.config_set(name.replace("_", "-"), value)


def _memory_at(client, fraction: float) -> int:
    """A maxmemory at which what Redis uses now is `fraction` of it. 8 MB of ballast first (written
    by the admin user: outside miStudio's keys), so that the ~0.1 MB that client buffers come and
    go by moves the fraction by about 1 %."""
    # Appended in 64 KB pieces: one 8 MB SET leaves an 8 MB query buffer that Redis frees only
    # later, so used_memory would count the ballast twice for a while.
    client.delete("test:ballast")
    pipe = client.pipeline(transaction=False)
    for _ in range(128):
        pipe.append("test:ballast", "x" * 64 * 2**10)
    pipe.execute()
    return int(client.info("memory")["used_memory"] / fraction)


def _alert(alerts, name):
    return next((a for a in alerts if a["name"] == name), None)


def test_metrics_include_the_seeds(redis_db):
    metrics = monitoring.redis_metrics(redis_db("queue"))
    assert SEED_METRICS <= set(metrics)
    assert metrics["used_memory_mb"] > 0 and metrics["maxmemory"] == 2 * 1024**3  # redis.conf's 2gb
    status = lifecycle.status()
    assert SEED_METRICS <= set(status["metrics"]) and status["alerts"] == []


@pytest.mark.parametrize("fraction, level", [(0.5, None), (0.75, "warning"), (0.92, "critical")])
def test_memory_alerts_fire_at_70_and_85_percent_of_maxmemory(redis_db, redis_admin, fraction, level):
    client = redis_admin("queue")
    with server_config(client, maxmemory=_memory_at(client, fraction)):
        _, alerts = monitoring.snapshot()
    alert = _alert(alerts, "memory_usage")
    assert (alert and alert["level"]) == level
    if alert:
        assert abs(alert["value"] - fraction) < 0.03 and "of maxmemory" in alert["message"]


def test_thresholds_are_inclusive_and_rates_are_per_minute():
    def sample(**values):
        base = {"time": 1000.0, "run_id": "r", "evicted_keys": 0, "used_cpu": 0.0, "blocked_clients": 0,
                "memory_usage": 0.1, "used_memory_mb": 1.0, "maxmemory": 1, "maxmemory_policy": "allkeys-lru",
                "replication_lag": None}
        return {**base, **values}

    def level(name, now, before=None, **kw):
        alert = _alert(monitoring.evaluate(now, before, **kw), name)
        return alert and alert["level"]

    start = sample()
    assert level("evicted_keys_per_min", sample(time=1060.0, evicted_keys=99), start) is None
    assert level("evicted_keys_per_min", sample(time=1060.0, evicted_keys=100), start) == "warning"
    assert level("evicted_keys_per_min", sample(time=1030.0, evicted_keys=250), start) == "critical"  # 500/min
    assert level("evicted_keys_per_min", sample(time=1060.0, evicted_keys=10**6, run_id="restarted"), start) is None
    assert level("cpu_usage", sample(time=1010.0, used_cpu=6.0), start) == "warning"
    assert level("cpu_usage", sample(time=1010.0, used_cpu=8.0), start) == "critical"
    assert level("blocked_clients", sample(blocked_clients=4)) is None
    assert level("blocked_clients", sample(blocked_clients=5)) == "warning"
    assert level("blocked_clients", sample(blocked_clients=12), expected_blocked=4) == "warning"  # 8 beyond
    assert level("replication_lag", sample(replication_lag=30.0)) == "critical"
    assert level("memory_usage", sample(memory_usage=0.70)) == "warning"
    assert level("memory_usage", sample(memory_usage=None)) is None  # no maxmemory: nothing to judge


def test_evictions_per_minute_alert_on_a_real_server(redis_db, redis_admin):
    client, cache = redis_admin("queue"), redis_admin("cache")
    room = client.info("memory")["used_memory"] + 512 * 1024
    with server_config(client, maxmemory_policy="allkeys-lru", maxmemory=room):
        before = monitoring.redis_metrics(client)
        pipe = cache.pipeline(transaction=False)
        for i in range(3000):
            pipe.set(f"test:evict:{i}", "x" * 1024)
        pipe.execute()
        time.sleep(max(0.0, before["time"] + 1.1 - time.time()))
        now = monitoring.redis_metrics(client)
    assert now["evicted_keys"] - before["evicted_keys"] > 500
    alert = _alert(monitoring.evaluate(now, before), "evicted_keys_per_min")
    assert alert["level"] == "critical" and "allkeys-lru" in alert["message"]


def test_blocked_clients_alert_counts_only_those_beyond_the_workers_own(redis_db, redis_admin):
    queue = redis_admin("queue")  # a test key, outside miStudio's families
    stop = "test:unblock"

    def block():
        queue.blpop([stop], timeout=20)

    threads = [threading.Thread(target=block) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: queue.info("clients")["blocked_clients"] >= 6, message="6 blocked clients")
        assert _alert(monitoring.snapshot()[1], "blocked_clients")["level"] == "warning"
        # a worker whose heartbeat declares 6 threads accounts for 6 BRPOPs: nothing unusual
        beat(redis_db("locks"), "dev:cpu:1", {"workers": 6}, ttl=30)
        assert _alert(monitoring.snapshot()[1], "blocked_clients") is None
    finally:
        queue.lpush(stop, *range(6))
        for t in threads:
            t.join(30)


def test_the_leader_publishes_alerts_on_system_alerts_and_their_resolution(redis_db, redis_admin):
    client = redis_admin("queue")
    listener = redis_db("pubsub").pubsub()
    listener.subscribe(keys.SYSTEM_ALERTS_CHANNEL)
    wait_for(lambda: listener.get_message(timeout=0.1), message="subscribed")
    monitor = monitoring.Monitor()
    monitor.tick()  # a calm first round: nothing published
    with server_config(client, maxmemory=_memory_at(client, 0.9)):
        _, alerts = monitor.tick()
        assert _alert(alerts, "memory_usage")["level"] == "critical"
        monitor.tick()  # unchanged: not published again
        status = lifecycle.status()
        assert _alert(status["alerts"], "memory_usage")["level"] == "critical"
        cli = run_cli("status")
        assert cli.returncode == 0 and "ALERT [critical] Redis memory at" in cli.stdout
    monitor.tick()  # maxmemory restored: resolved

    received, deadline = [], time.monotonic() + 10
    while time.monotonic() < deadline and len(received) < 3:  # a third would be a repeat: there is none
        message = listener.get_message(timeout=0.5 if len(received) < 2 else 0.1)
        if message and message["type"] == "message":
            received.append(json.loads(message["data"]))
        elif len(received) == 2:
            break
    listener.close()
    assert [(m["type"], m["data"]["name"], m["data"]["level"]) for m in received] == [
        ("system.alert", "memory_usage", "critical"), ("system.alert", "memory_usage", "resolved")]
    assert all(isinstance(m["seq"], int) and m["timestamp"] > 0 for m in received)
    assert received[1]["seq"] == received[0]["seq"] + 1
    assert redis_db("locks").get(keys.alerts_active()) == "[]"
