"""The consumer process of one queue: `mistudio worker --queue gpu|io|cpu`.

A Huey Consumer whose worker threads claim under leases (LeasedWorker), plus: the
heartbeat (worker:{id}:heartbeat, every 10 s, with the device's free resources), an
elector (every consumer campaigns for `cluster:leader`) and the leader's duties (the
reaper, which requeues jobs whose lease expired; status and alerts), which run only
in the process that leads. SIGTERM and SIGINT both give running jobs back to the
queue at once, hand leadership over, and exit; nothing waits for a lease to expire.
"""

from __future__ import annotations

import logging
import os
import socket
import time

from huey.consumer import Consumer

from mistudio.coord import resources
from mistudio.coord.heartbeat import HeartbeatThread
from mistudio.coord.leader import Elector
from mistudio.queue.apps import huey_app
from mistudio.queue.duties import LeaderDuties
from mistudio.queue.routes import queue_spec
from mistudio.queue.worker import LeasedWorker, Runtime
from mistudio.redis.connection import check_connection, get_client
from mistudio.settings import Settings, get_settings

logger = logging.getLogger("mistudio.queue.consumer")


class LeasedConsumer(Consumer):
    worker_class = LeasedWorker

    def __init__(self, huey, runtime: Runtime, **options):
        self.runtime = runtime  # before super().__init__, which creates the workers
        super().__init__(huey, **options)

    def _create_worker(self):
        return self.worker_class(
            huey=self.huey, stop_flag=self.stop_flag, default_delay=self.default_delay,
            max_delay=self.max_delay, backoff=self.backoff, max_tasks=self.max_tasks, runtime=self.runtime,
        )

    def start(self):
        super().start()
        rt = self.runtime
        locks_client = get_client("locks", settings=rt.settings)
        self.elector = Elector(locks_client, rt.worker_id, rt.settings.leader_ttl)
        self.elector.start()
        self.heartbeat = HeartbeatThread(locks_client, rt.worker_id, self._heartbeat_info,
                                         rt.settings.heartbeat_interval, rt.settings.heartbeat_ttl)
        self.heartbeat.start()
        reap_interval = max(0.5, min(5.0, rt.settings.lease_seconds / 4))
        self.duties = LeaderDuties(self.elector, rt.settings, reap_interval)
        self.duties.start()

    def stop(self, graceful=False):
        # Both signals give jobs back at once: a stopping worker never sits on a job.
        logger.info("stopping: giving running jobs back to the %s queue", self.runtime.queue.name)
        self.runtime.shutdown()
        self.stop_flag.set()
        for thread in ("duties", "elector", "heartbeat"):
            if hasattr(self, thread):
                getattr(self, thread).stop()

    def _heartbeat_info(self) -> dict:
        rt = self.runtime
        with rt.lock:
            active = [e.lease.job_id for e in rt.active]
        return {
            "status": "busy" if active else "idle",
            "queue": rt.queue.name,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "device": rt.settings.device_id,
            "run_store": str(rt.settings.run_store),  # where this device's runs go (shared or its own)
            "active_jobs": active,
            "workers": self.workers,
            "leader": self.elector.is_leader(),
            **resources.sample(),
        }


def run_worker(queue: str, settings: Settings | None = None, workers: int | None = None) -> None:
    """Run one queue's consumer in the foreground until SIGTERM/SIGINT."""
    settings = settings or get_settings()
    spec = queue_spec(queue)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s[%(process)d] %(levelname)s: %(message)s")
    check_connection(settings)
    app = huey_app(spec.name, settings)
    worker_id = f"{settings.device_id}:{spec.name}:{os.getpid()}"
    runtime = Runtime(huey=app, queue_spec=spec, worker_id=worker_id, settings=settings,
                      results_client=get_client("results", settings=settings))
    consumer = LeasedConsumer(
        app, runtime, workers=workers or spec.workers, periodic=False, initial_delay=0.05, max_delay=1.0,
        check_worker_health=True, health_check_interval=5,
    )
    logger.info("worker %s: %d thread(s) on the %s queue (lease %.0f s)", worker_id, consumer.workers, spec.name,
                settings.lease_seconds)
    started = time.time()
    consumer.run()
    logger.info("worker %s exiting after %.0f s", worker_id, time.time() - started)
