"""The worker side of at-least-once delivery.

`LeasedWorker` is a Huey Worker (the consumer's `worker_class`) that claims a message
under a lease and hands it to an `Execution`, which:
- checks the message first (several devices share one Redis: a message is input): a
  valid job id (queue.ids, the rule jobs.submit uses), a registered task, the shape
  our own messages have; anything else goes to the dead letters with the reason, unrun;
- skips jobs already final (cancelled while queued, or a duplicate delivery);
- keeps the lease alive (the process's keeper thread renews it every lease/3, retrying
  every second while Redis is away; polls the record for a cancel or a newer delivery,
  and the time limit; and stops the job when any of them says so);
- holds what the job needs besides (coord.jobguard: its assignment, its task's
  concurrency slot, the device's GPU lock for isolated queues), renewed with the lease;
- runs the task in this thread, or for isolated queues (gpu) in a spawned child
  process that it supervises and kills on cancel, lost lease or time limit;
- acknowledges the message when the job ended, gives it back when the worker stops.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time

from huey.consumer import Worker

from mistudio.coord.jobguard import JobGuard
from mistudio.queue import child, context, endings, records
from mistudio.queue.ids import JOB_ID_FIX, is_valid_job_id
from mistudio.queue.storage import Lease, LeaseStorage
from mistudio.tasks import all_tasks

logger = logging.getLogger("mistudio.queue.worker")

CHILD_STOP_GRACE = 10.0  # seconds a child gets to stop cleanly before SIGKILL
SHUTDOWN_GRACE = 3.0  # ... when the whole worker is stopping
RENEW_RETRY = 1.0  # seconds between renewal tries while Redis cannot be reached


class Runtime:
    """What all worker threads of one consumer process share."""

    def __init__(self, *, huey, queue_spec, worker_id: str, settings, results_client):
        self.huey = huey
        self.queue = queue_spec
        self.worker_id = worker_id
        self.settings = settings
        self.results = results_client
        self.storage: LeaseStorage = huey.storage
        self.active: set[Execution] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.keeper = threading.Thread(target=self._keep, name="keeper", daemon=True)
        self.keeper.start()

    def _keep(self) -> None:
        """One thread looks after every running job of this process (see Execution.tend)."""
        while True:
            with self.lock:
                active = list(self.active)
            for execution in active:
                try:
                    execution.tend(time.monotonic())
                except Exception:
                    logger.exception("job %s: keeper error", execution.lease.job_id)
            time.sleep(0.05)

    def shutdown(self) -> None:
        """Give every running job back to the queue at once (SIGTERM/SIGINT)."""
        self.stopping.set()
        with self.lock:
            active = list(self.active)
        for execution in active:
            execution.give_back()
        for execution in active:
            execution.wait_child(SHUTDOWN_GRACE)


class Execution:
    def __init__(self, runtime: Runtime, lease: Lease):
        self.rt = runtime
        self.lease = lease
        self.child: subprocess.Popen | None = None
        self.ctx: context.JobContext | None = None
        self.guard: JobGuard | None = None
        self._released = False
        self.finished = False

    # --- the steps -------------------------------------------------------------------

    def run(self) -> None:
        rt, lease = self.rt, self.lease
        task, problem = self._check_message()
        if problem is not None:
            self._reject(problem)
            return
        outcome, record = records.start(rt.results, lease.job_id, worker=rt.worker_id, lease=lease.id,
                                        attempt=lease.attempt, deadline=lease.deadline)
        if outcome == "missing":
            # Enqueued straight through Huey: give it a record so it can be followed.
            records.create(rt.results, lease.job_id, task.name, rt.queue.name, task.priority or 0, task.args[1],
                           rt.settings.task_time_limit)
            outcome, record = records.start(rt.results, lease.job_id, worker=rt.worker_id, lease=lease.id,
                                            attempt=lease.attempt, deadline=lease.deadline)
        if outcome == "expired":
            logger.warning("job %s: its lease expired before it started; the reaper hands it out again", lease.job_id)
            return
        if outcome == "skip":
            logger.info("job %s is %s: not running it", lease.job_id, record["state"])
            rt.storage.ack(lease)
            return
        self.ctx = context.JobContext(
            job_id=lease.job_id, task=task.name, queue=rt.queue.name, attempt=lease.attempt, lease_id=lease.id,
            worker_id=rt.worker_id, storage=rt.storage, results=rt.results,
        )
        self.guard = JobGuard(rt.settings, job_id=lease.job_id, slot=all_tasks()[task.name].slot,
                              worker_id=rt.worker_id, gpu=rt.queue.isolate)
        now = time.monotonic()
        self.started, self.last_renewed = now, now
        self.next_renew = now + rt.storage.lease_seconds / 3
        self.next_cancel_check = now + 0.25
        self.time_limit = record.get("time_limit") or rt.settings.task_time_limit
        with rt.lock:
            rt.active.add(self)  # the runtime's keeper now renews the lease, polls cancel, enforces the time limit
        try:
            # Waits while the slot or the GPU is busy; gives up if the job must stop meanwhile.
            if self.guard.acquire(wait=self.ctx.wait):
                if rt.queue.isolate:
                    self._run_child()
                else:
                    self._run_inline(task)
        finally:
            self.finished = True
            with rt.lock:
                rt.active.discard(self)
            self.guard.release()
        self._settle()

    def _check_message(self):
        """(task, None) for a message we may run, else (None, why not)."""
        lease = self.lease
        if not is_valid_job_id(lease.job_id):
            what = f"invalid job id {lease.job_id!r}" if lease.job_id else "no string job id"
            return None, f"{what} ({JOB_ID_FIX})"
        name, known = _task_name(lease.message), self.rt.huey.message_names
        if name is not None and name not in known:
            return None, f"unknown task {name!r} (this worker runs {', '.join(sorted(known.values()))})"
        try:
            task = self.rt.huey.deserialize_task(lease.message)
        except Exception as exc:
            return None, f"undecodable message: {type(exc).__name__}: {exc}"
        args = task.args
        if not (task.id == lease.job_id and isinstance(args, tuple) and len(args) == 2 and args[0] == lease.job_id
                and isinstance(args[1], dict)):
            return None, "the message's id and arguments do not match the job it names"
        if task.kwargs or task.on_complete or task.on_error or task.chord_config or task.eta or task.expires \
                or task.retries:
            return None, "the message asks for Huey features miStudio jobs never use (chains, retries, ETA, expiry)"
        return task, None

    def _reject(self, problem: str) -> None:
        rt, lease = self.rt, self.lease
        logger.error("%s queue: message of job %r moved to the dead letters, not run: %s", rt.queue.name,
                     lease.job_id, problem)
        if rt.storage.bury(lease, problem) and is_valid_job_id(lease.job_id):
            endings.finish(rt.results, lease.job_id, "dead", error=f"not run: {problem}", lease=lease.id)

    def _run_inline(self, task) -> None:
        token = context.activate(self.ctx)
        try:
            self.rt.huey.execute(task)
        finally:
            context.deactivate(token)

    def _run_child(self) -> None:
        payload = {
            "queue": self.rt.queue.name, "message": self.lease.message.decode(), "lease_id": self.lease.id,
            "job_id": self.lease.job_id, "attempt": self.lease.attempt, "worker_id": self.rt.worker_id,
        }
        parent = os.getpid()
        self.child = subprocess.Popen(
            [sys.executable, "-m", "mistudio.queue.child"], stdin=subprocess.PIPE, text=True,
            # the GPU fencing token (coord.locks.job_fence), and who the child must die with
            env={**os.environ, **self.guard.child_env(), child.PARENT_ENV: str(parent)},
            preexec_fn=child.parent_death_preexec(parent),
        )
        self._send({"start": payload})
        stop_sent_at = None
        while self.child.poll() is None:
            if self.ctx.stop_reason and stop_sent_at is None:
                self._send({"stop": self.ctx.stop_reason})
                stop_sent_at = time.monotonic()
            grace = SHUTDOWN_GRACE if self.ctx.stop_reason == "shutdown" else CHILD_STOP_GRACE
            if stop_sent_at is not None and time.monotonic() - stop_sent_at > grace:
                logger.warning("job %s: child did not stop in %.0f s, killing it", self.lease.job_id, grace)
                self.child.kill()
            time.sleep(0.05)

    def _send(self, message: dict) -> None:
        try:
            self.child.stdin.write(json.dumps(message) + "\n")
            self.child.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def wait_child(self, timeout: float) -> None:
        if self.child is None:
            return
        try:
            self.child.wait(timeout)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait(5)

    def tend(self, now: float) -> None:
        """Called by the runtime's keeper every ~50 ms while the job runs."""
        if self.finished:
            return
        rt, ctx = self.rt, self.ctx
        self.guard.assign()  # records the assignment's new status, if any (kept off the start path)
        lease_len = rt.storage.lease_seconds
        if now >= self.next_renew:
            retry = False
            try:
                if rt.storage.renew(self.lease):
                    self.last_renewed = now
                    if not self.guard.renew():  # slot or GPU lock lost: another may hold it now
                        ctx.stop("lease_lost")
                else:
                    ctx.stop("lease_lost")
            except Exception as exc:  # Redis away: the lease holds until its deadline, try again soon
                retry = True
                logger.warning("job %s: lease renewal failed (%s), retrying", self.lease.job_id, exc)
                if now - self.last_renewed > lease_len:
                    ctx.stop("lease_lost")
            self.next_renew = now + (RENEW_RETRY if retry else lease_len / 3 if ctx.stop_reason is None else 0.5)
        if now >= self.next_cancel_check:
            try:
                # A cancel, or a record that moved on (requeued, or another delivery started it).
                reason = records.stop_reason(rt.results, self.lease.job_id, self.lease.id)
                if reason is not None:
                    ctx.stop(reason)
            except Exception:
                pass
            self.next_cancel_check = now + 0.25
        if now - self.started > self.time_limit:
            ctx.stop("time_limit")

    def give_back(self) -> None:
        """The worker is stopping: requeue now, then stop the task (its writes are fenced off)."""
        if self.ctx is None or self._released:
            return
        self._released = True
        self.ctx.stop("shutdown")
        try:
            if self._requeue("requeued: its worker was stopped"):
                logger.info("job %s: given back to the %s queue", self.lease.job_id, self.rt.queue.name)
        except Exception:
            logger.exception("job %s: could not give it back; its lease will expire", self.lease.job_id)

    def _requeue(self, note: str) -> bool:
        """Release the lease (if still held) and say so in the record, if it still names this delivery."""
        if not self.rt.storage.release(self.lease):
            return False
        records.mark_queued(self.rt.results, self.lease.job_id, note=note, lease=self.lease.id)
        return True

    def _settle(self) -> None:
        """After the task returned (or its child exited): ack, requeue or bury."""
        rt, ctx, lease = self.rt, self.ctx, self.lease
        reason = ctx.stop_reason
        rc = self.child.returncode if self.child is not None else 0
        if reason == "shutdown":
            self.give_back()
            return
        record = records.get(rt.results, lease.job_id) or {}
        if reason == "lease_lost" or rc == child.LEASE_LOST_EXIT:
            if record.get("state") == "running" and record.get("lease") != lease.id:
                rt.storage.ack(lease)  # a duplicate message of a job another delivery runs: drop ours
            else:  # lost, or not provable at a commit: the job comes back (at once if the lease is ours)
                self._requeue("requeued: its lease was lost or could not be confirmed")
            return
        state = record.get("state")
        name, params = record.get("task"), record.get("params")
        if state in records.ACTIVE:
            # The task did not record an end: its child crashed, or it was stopped mid-way.
            if reason == "cancelled":
                records.finish(rt.results, lease.job_id, "cancelled", error="cancelled by user", lease=lease.id)
            elif reason == "time_limit":
                endings.finish(rt.results, lease.job_id, "failed", task=name, params=params, lease=lease.id,
                               error="time limit exceeded")
            elif rc < 0:
                # Killed by a signal we did not send (e.g. the OOM killer): a crash, retried.
                if lease.attempt < rt.settings.max_attempts and self._requeue(
                        f"requeued: its process was killed by signal {-rc}"):
                    return
                error = f"its process was killed by signal {-rc} on each of {lease.attempt} attempts"
                rt.storage.bury(lease, error)
                endings.finish(rt.results, lease.job_id, "dead", task=name, params=params, lease=lease.id, error=error)
                return
            else:
                endings.finish(rt.results, lease.job_id, "failed", task=name, params=params, lease=lease.id,
                               error=f"the job's process exited with code {rc} without a result; see the worker log")
        if not rt.storage.ack(lease):
            logger.warning("job %s: lease was lost before the ack", lease.job_id)


def _task_name(message: bytes) -> str | None:
    """The task name a message asks for, if it is readable at all."""
    try:
        name = json.loads(message)["__message__"]["name"]
    except (ValueError, KeyError, TypeError):
        return None
    return name if isinstance(name, str) else None


class LeasedWorker(Worker):
    """A Huey worker thread that claims under a lease instead of popping."""

    def __init__(self, *args, runtime: Runtime, **kwargs):
        super().__init__(*args, **kwargs)
        self.runtime = runtime

    def loop(self, now=None):
        if self.runtime.stopping.is_set():
            self.stop_flag.wait(0.1)
            return
        try:
            lease = self.runtime.storage.claim(self.runtime.worker_id)
        except Exception:
            self._logger.exception("Error reading from the %s queue", self.runtime.queue.name)
            self.sleep()
            return
        if lease is None:
            return
        self.delay = self.default_delay
        if self.runtime.stopping.is_set():
            self.runtime.storage.release(lease)
            return
        try:
            Execution(self.runtime, lease).run()
        except Exception:
            self._logger.exception("job %s: worker error", lease.job_id)
