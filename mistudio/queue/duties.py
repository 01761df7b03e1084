"""The cluster duties the leader runs (every consumer process campaigns, coord/leader.py; one leads).

- the reaper (requeue jobs whose lease expired, dead-letter repeat offenders), every
  `reap_interval` seconds: one process instead of every consumer polling every queue;
- every MISTUDIO_STATUS_INTERVAL seconds: Redis metrics and alerts (mistudio.monitoring),
  and a `system.status` event on `system:status` (leader, queues, workers, metrics, alerts).
"""

from __future__ import annotations

import logging
import threading
import time

from mistudio.coord.heartbeat import healthy_workers
from mistudio.coord.leader import Elector
from mistudio.events import publish
from mistudio.monitoring import Monitor
from mistudio.queue.apps import huey_app
from mistudio.queue.reaper import reap_once
from mistudio.queue.routes import QUEUES
from mistudio.redis import keys
from mistudio.redis.connection import get_client
from mistudio.settings import Settings

logger = logging.getLogger("mistudio.queue.duties")

STATUS_METRICS = ("used_memory_mb", "memory_usage", "mem_fragmentation_ratio", "instantaneous_ops_per_sec",
                  "connected_clients", "blocked_clients", "evicted_keys", "hit_rate")


def status_event(elector: Elector, settings: Settings, metrics: dict, alerts: list[dict]) -> dict:
    workers = healthy_workers(get_client("locks", settings=settings))
    return {
        "leader": elector.node_id,
        "term": elector.term,
        "queues": {q: huey_app(q, settings).storage.counts() for q in QUEUES},
        "workers": [{k: w.get(k) for k in ("worker_id", "status", "queue", "device", "active_jobs")} for w in workers],
        "metrics": {k: metrics.get(k) for k in STATUS_METRICS},
        "alerts": alerts,
    }


class LeaderDuties(threading.Thread):
    def __init__(self, elector: Elector, settings: Settings, reap_interval: float):
        super().__init__(name="leader-duties", daemon=True)
        self.elector, self.settings, self.reap_interval = elector, settings, reap_interval
        self.stopped = threading.Event()

    def run(self) -> None:
        monitor = Monitor(self.settings)
        next_status = 0.0
        while not self.stopped.wait(self.reap_interval):
            if not self.elector.is_leader():
                next_status = 0.0  # a new leader reports at once
                continue
            try:
                reap_once(self.settings)
            except Exception as exc:
                logger.warning("reaper: %s", exc)
            if time.monotonic() >= next_status and self.elector.is_leader():
                next_status = time.monotonic() + self.settings.status_interval
                try:
                    metrics, alerts = monitor.tick()
                    publish(keys.SYSTEM_STATUS_CHANNEL, "system.status",
                            status_event(self.elector, self.settings, metrics, alerts), settings=self.settings)
                except Exception as exc:
                    logger.warning("status round: %s", exc)

    def stop(self) -> None:
        self.stopped.set()
