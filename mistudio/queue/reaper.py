"""The reaper: requeue jobs whose lease expired (their worker died), dead-letter repeat offenders.

The Lua script moves each expired lease exactly once, so running it from several
processes at once is safe; the leader runs it on a schedule (see mistudio.coord). The
record is updated after the script, in its own round trip, so each update is a
compare-and-set on the reaped lease: by then another worker may have started the job.
"""

from __future__ import annotations

import logging

from mistudio.queue import endings, records
from mistudio.queue.ids import is_valid_job_id
from mistudio.queue.apps import huey_app
from mistudio.queue.routes import QUEUES
from mistudio.queue.storage import Reaped
from mistudio.redis.connection import get_client
from mistudio.settings import Settings, get_settings

logger = logging.getLogger("mistudio.queue.reaper")


def reap_once(settings: Settings | None = None) -> list[Reaped]:
    settings = settings or get_settings()
    results = get_client("results", settings=settings)
    reaped: list[Reaped] = []
    for queue in QUEUES:
        storage = huey_app(queue, settings).storage
        for item in storage.reap(settings.max_attempts):
            reaped.append(item)
            if not is_valid_job_id(item.job_id):
                continue  # no record to update (the worker dead-letters such messages on sight)
            if item.outcome == "dead":
                logger.warning("job %s dead after %d attempts (its worker kept dying)", item.job_id, item.attempts)
                endings.finish(
                    results, item.job_id, "dead", allowed=("running", "queued"), lease=item.lease_id,
                    error=f"its worker died or lost the lease on each of {item.attempts} attempts",
                )
            else:
                logger.info("job %s: lease expired, requeued (attempt %d)", item.job_id, item.attempts)
                # Only if the record still names this delivery: a newer one may have started already.
                records.mark_queued(results, item.job_id, note=f"requeued: lease expired on attempt {item.attempts}",
                                    lease=item.lease_id)
    return reaped
