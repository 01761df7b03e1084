"""Worker heartbeats: SETEX worker:{id}:heartbeat every 10 s with a 30 s TTL (the seed's
scheme; MISTUDIO_HEARTBEAT_INTERVAL / _TTL), plus a registry sorted set so workers are
listed without KEYS or SCAN. The payload carries status, device, active jobs and what the
device has free (mistudio.coord.resources: GPU utilisation, free memory).

A worker whose heartbeat lapsed is dropped from the registry, with its job assignments;
its jobs themselves come back through their queue leases (the leader's reaper)."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable

import redis

from mistudio.coord import assignments
from mistudio.redis import keys

logger = logging.getLogger("mistudio.coord.heartbeat")

INTERVAL = 10.0  # seconds between beats (default of MISTUDIO_HEARTBEAT_INTERVAL)
TTL = 30.0  # seconds a heartbeat lives: three missed beats and the worker is gone (MISTUDIO_HEARTBEAT_TTL)


def beat(client: redis.Redis, worker_id: str, info: dict, ttl: float = TTL) -> None:
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.set(keys.worker_heartbeat(worker_id), json.dumps({**info, "worker_id": worker_id, "time": now}),
             px=int(ttl * 1000))
    pipe.zadd(keys.workers_registry(), {worker_id: now})
    pipe.execute()


def remove(client: redis.Redis, worker_id: str) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.delete(keys.worker_heartbeat(worker_id))
    pipe.zrem(keys.workers_registry(), worker_id)
    pipe.execute()


def healthy_workers(client: redis.Redis) -> list[dict]:
    """Workers whose heartbeat is alive, each with its heartbeat data and age (seconds).
    Registry entries whose heartbeat expired are pruned on the way."""
    ids = client.zrange(keys.workers_registry(), 0, -1)
    if not ids:
        return []
    values = client.mget([keys.worker_heartbeat(w) for w in ids])
    now = time.time()
    alive, gone = [], []
    for worker_id, raw in zip(ids, values):
        if raw is None:
            gone.append(worker_id)
            continue
        data = json.loads(raw)
        data["age"] = max(0.0, now - float(data.get("time", now)))
        alive.append(data)
    for worker_id in gone:
        if client.exists(keys.worker_heartbeat(worker_id)):
            continue  # it beat again meanwhile (a Redis blip, not a death)
        # Every caller that finds it dead removes its assignments before returning, and only then
        # its registry entry (idempotent, so concurrent pruners may both): no caller is told a worker
        # is gone while its jobs still look assigned to it.
        assignments.forget_worker(client, worker_id)
        client.zrem(keys.workers_registry(), worker_id)
    return sorted(alive, key=lambda d: d["worker_id"])


class HeartbeatThread(threading.Thread):
    """Beats every interval until stopped; info() supplies the payload each time."""

    def __init__(self, client: redis.Redis, worker_id: str, info: Callable[[], dict], interval: float = INTERVAL,
                 ttl: float = TTL):
        super().__init__(name=f"heartbeat-{worker_id}", daemon=True)
        self.client, self.worker_id, self.info, self.interval, self.ttl = client, worker_id, info, interval, ttl
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                beat(self.client, self.worker_id, self.info(), self.ttl)
            except Exception as exc:  # Redis down: keep trying, the TTL tells others we are gone
                logger.warning("heartbeat failed: %s", exc)
            self.stopped.wait(self.interval)

    def stop(self, remove_entry: bool = True) -> None:
        self.stopped.set()
        if remove_entry:
            try:
                remove(self.client, self.worker_id)
            except Exception:
                pass
