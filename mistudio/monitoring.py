"""Redis metrics and alerts: the seed's "Monitoring Metrics" and "Alerting Thresholds".

    monitoring.redis_metrics(client)   # memory, fragmentation, ops/s, clients, persistence, hits, evictions
    monitoring.snapshot()              # (metrics, alerts) now: what `mistudio status` shows
    Monitor(settings).tick()           # the leader, every MISTUDIO_STATUS_INTERVAL s

Thresholds live in mistudio/limits_config.py (ALERTS). Level metrics (memory, blocked
clients, replication lag) are judged on one sample; rates (evicted keys per minute, CPU)
against the leader's previous sample, kept in Redis so a new leader carries on. The
leader publishes a `system.alert` event on `system:alerts` when an alert starts or
changes level, and one with level "resolved" when it clears.

Blocked clients: every idle queue worker thread waits in BRPOP on its wake-up list, and
Redis counts it as blocked, so the seed's 5/10 would fire on any cluster with 5 worker
threads. We count the blocked clients beyond the worker threads the heartbeats declare.
"""

from __future__ import annotations

import json
import logging

import redis

from mistudio import limits_config
from mistudio.coord.heartbeat import healthy_workers
from mistudio.events import SystemAlert, publish
from mistudio.redis import keys
from mistudio.redis.connection import get_client, is_out_of_memory
from mistudio.settings import Settings, get_settings

logger = logging.getLogger("mistudio.monitoring")

MB = 1024 * 1024
MIN_RATE_SPAN = 1.0  # seconds between samples below which rates are too noisy to judge
LAST_SAMPLE_TTL = 86400


def redis_metrics(client, info: dict | None = None) -> dict:
    """The seed's get_redis_metrics(), plus what the alerts need (maxmemory, CPU, server time, lag).
    `info`: an INFO reply the caller already has."""
    info = client.info() if info is None else info
    used, maxmemory = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    hits, misses = int(info.get("keyspace_hits", 0)), int(info.get("keyspace_misses", 0))
    lags = [float(v["lag"]) for k, v in info.items() if k.startswith("slave") and isinstance(v, dict) and "lag" in v]
    if info.get("role") == "slave" and info.get("master_last_io_seconds_ago") is not None:
        lags.append(float(info["master_last_io_seconds_ago"]))
    return {
        # memory
        "used_memory_mb": used / MB,
        "used_memory_peak_mb": int(info.get("used_memory_peak", 0)) / MB,
        "mem_fragmentation_ratio": info.get("mem_fragmentation_ratio"),
        "used_memory": used,
        "maxmemory": maxmemory,
        "maxmemory_policy": info.get("maxmemory_policy"),
        "memory_usage": used / maxmemory if maxmemory else None,
        # performance
        "total_commands_processed": info.get("total_commands_processed"),
        "instantaneous_ops_per_sec": info.get("instantaneous_ops_per_sec"),
        "used_cpu": float(info.get("used_cpu_sys", 0)) + float(info.get("used_cpu_user", 0)),
        # connections
        "connected_clients": info.get("connected_clients"),
        "blocked_clients": info.get("blocked_clients"),
        # persistence
        "rdb_last_save_time": info.get("rdb_last_save_time"),
        "rdb_changes_since_last_save": info.get("rdb_changes_since_last_save"),
        "aof_enabled": bool(info.get("aof_enabled")),
        # replication
        "connected_slaves": info.get("connected_slaves"),
        "replication_lag": max(lags) if lags else None,
        # stats
        "keyspace_hits": hits,
        "keyspace_misses": misses,
        "hit_rate": hits / (hits + misses) if hits + misses else None,
        "evicted_keys": int(info.get("evicted_keys", 0)),
        # one clock for rates, whichever process samples
        "time": int(info.get("server_time_usec", 0)) / 1e6,
        "run_id": info.get("run_id"),
    }


def _rates(now: dict, before: dict | None) -> dict:
    """Per-minute evictions and CPU share since `before` (same server run, far enough apart)."""
    if not before or before.get("run_id") != now.get("run_id"):
        return {}
    span = now["time"] - before["time"]
    if span < MIN_RATE_SPAN:
        return {}
    return {
        "evicted_keys_per_min": max(0, now["evicted_keys"] - before["evicted_keys"]) * 60 / span,
        "cpu_usage": max(0.0, now["used_cpu"] - before["used_cpu"]) / span,
    }


def _message(name: str, value: float, m: dict) -> str:
    if name == "memory_usage":
        return f"Redis memory at {value:.0%} of maxmemory ({m['used_memory_mb']:.1f} of {m['maxmemory'] / MB:.1f} MB)"
    if name == "cpu_usage":
        return f"Redis uses {value:.0%} of a CPU core"
    if name == "evicted_keys_per_min":
        return f"Redis evicts {value:.0f} keys per minute (maxmemory-policy {m.get('maxmemory_policy')})"
    if name == "blocked_clients":
        return f"{value:.0f} clients blocked in Redis beyond the queue workers' own"
    return f"replication lag {value:.0f} s"


def evaluate(now: dict, before: dict | None = None, *, expected_blocked: int = 0,
             thresholds: dict[str, tuple[float, float]] | None = None) -> list[dict]:
    """Alerts for one sample: [{name, level (warning|critical), value, warning, critical, message}], critical first."""
    thresholds = thresholds or limits_config.ALERTS
    values = {
        "memory_usage": now.get("memory_usage"),
        "blocked_clients": max(0, (now.get("blocked_clients") or 0) - expected_blocked),
        "replication_lag": now.get("replication_lag"),
        **_rates(now, before),
    }
    alerts = []
    for name, (warning, critical) in thresholds.items():
        value = values.get(name)
        if value is None or value < warning:
            continue
        level = "critical" if value >= critical else "warning"
        alerts.append({"name": name, "level": level, "value": value, "warning": warning, "critical": critical,
                       "message": _message(name, value, now)})
    return sorted(alerts, key=lambda a: (a["level"] != "critical", a["name"]))


def expected_blocked_clients(locks_client, workers: list[dict] | None = None) -> int:
    """Worker threads (each may sit in BRPOP) declared by the live workers' heartbeats
    (`workers`: healthy_workers() the caller already read)."""

    workers = healthy_workers(locks_client) if workers is None else workers
    return sum(int(w.get("workers") or 0) for w in workers)


def _load(client, key: str):
    raw = client.get(key)
    return json.loads(raw) if raw else None


def snapshot(settings: Settings | None = None, *, info: dict | None = None,
             workers: list[dict] | None = None) -> tuple[dict, list[dict]]:
    """Metrics now, and the alerts they raise (rates against the leader's last sample).
    `info` and `workers`: an INFO reply and healthy_workers() the caller already read."""
    settings = settings or get_settings()
    locks_client = get_client("locks", settings=settings)
    metrics = redis_metrics(get_client("queue", settings=settings), info)
    alerts = evaluate(metrics, _load(locks_client, keys.metrics_last()),
                      expected_blocked=expected_blocked_clients(locks_client, workers))
    return metrics, alerts


class Monitor:
    """The leader's monitor: sample, judge, remember, and publish what changed."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.client = get_client("locks", settings=self.settings)

    def tick(self) -> tuple[dict, list[dict]]:
        metrics = redis_metrics(get_client("queue", settings=self.settings))
        before = _load(self.client, keys.metrics_last())
        alerts = evaluate(metrics, before, expected_blocked=expected_blocked_clients(self.client))
        previous = {a["name"]: a for a in _load(self.client, keys.alerts_active()) or []}
        pipe = self.client.pipeline(transaction=False)
        if not before or metrics["time"] - before["time"] >= MIN_RATE_SPAN or before.get("run_id") != metrics["run_id"]:
            pipe.set(keys.metrics_last(), json.dumps(metrics), ex=LAST_SAMPLE_TTL)
        # Active alerts fade out if no leader re-evaluates them for three rounds.
        pipe.set(keys.alerts_active(), json.dumps(alerts), ex=max(3, int(3 * self.settings.status_interval)))
        try:
            pipe.execute()
        except redis.exceptions.ResponseError as exc:
            # A full Redis refuses this bookkeeping; the alerts about it must still go out (publish
            # falls back to a live-only message). Without the stored list they repeat each round.
            if not is_out_of_memory(exc):
                raise
            logger.warning("Redis is full: the monitor's sample and active alerts are not stored")
        for alert in alerts:
            if previous.pop(alert["name"], {}).get("level") != alert["level"]:
                logger.warning("alert [%s] %s", alert["level"], alert["message"])
                publish(keys.SYSTEM_ALERTS_CHANNEL, SystemAlert(**alert), settings=self.settings)
        for gone in previous.values():
            publish(keys.SYSTEM_ALERTS_CHANNEL, SystemAlert(**{**gone, "level": "resolved",
                                                               "message": f"resolved: {gone['message']}"}),
                    settings=self.settings)
        return metrics, alerts
