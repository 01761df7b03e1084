"""Start, stop and report the queue consumers that `mistudio up` runs in the background."""

from __future__ import annotations

import sys

from mistudio import services
from mistudio.coord.heartbeat import healthy_workers
from mistudio.queue.apps import huey_app
from mistudio.queue.routes import QUEUES
from mistudio.redis.connection import get_client
from mistudio.settings import Settings, get_settings


def service_name(queue: str) -> str:
    return f"worker-{queue}"


def ensure_workers(settings: Settings | None = None) -> dict[str, int]:
    """Start the consumer of every queue that is not running (e.g. after one died). Returns PIDs."""
    settings = settings or get_settings()
    pids = {}
    for queue in QUEUES:
        name = service_name(queue)
        record = services.read_record(settings, name)
        if not services.is_running(record):
            record = services.start_detached(
                name, [sys.executable, "-m", "mistudio.cli", "worker", "--queue", queue], settings, extra={"queue": queue}
            )
        pids[queue] = record.pid
    return pids


def stop_workers(settings: Settings | None = None, timeout: float = 20.0) -> list[str]:
    """SIGTERM each consumer (it gives its running job back to the queue at once) and wait."""
    settings = settings or get_settings()
    stopped = []
    for queue in QUEUES:
        record = services.read_record(settings, service_name(queue))
        if services.is_running(record):
            services.stop(record, timeout=timeout)
            stopped.append(queue)
        services.remove_record(settings, service_name(queue))
    return stopped


def queue_status(settings: Settings | None = None) -> dict:
    """Queue depths (queued, scheduled, in flight, dead) per queue, local worker PIDs, live workers."""
    settings = settings or get_settings()
    queues = {}
    for queue, spec in QUEUES.items():
        counts = huey_app(queue, settings).storage.counts()
        record = services.read_record(settings, service_name(queue))
        counts["local_worker_pid"] = record.pid if services.is_running(record) else None
        counts["threads"] = spec.workers
        queues[queue] = counts
    return {"queues": queues, "workers": healthy_workers(get_client("locks", settings=settings))}
