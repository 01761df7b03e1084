"""Every Redis key and pub/sub channel name miStudio uses, in one place.

Names follow the seed where it names them (channels, cache keys, locks, heartbeats).
Each function says which database the key lives in (see mistudio.settings).
Pub/sub channels are global in Redis (not per database).
"""

from __future__ import annotations

# --- queue (DB queue) ----------------------------------------------------------
# Huey's own pending-queue key is "huey.redis.{name}"; ours sit beside it.


def queue_pending(queue: str) -> str:
    """Sorted set of waiting messages (Huey's PriorityRedisStorage layout)."""
    return f"huey.redis.{queue}"


def queue_schedule(queue: str) -> str:
    """Sorted set of messages waiting for their ETA (Huey's schedule). miStudio schedules nothing;
    the storage counts it (`counts()["scheduled"]`) so a task given an ETA would not go unseen."""
    return f"huey.schedule.{queue}"


def queue_inflight(queue: str) -> str:
    """Hash lease_id -> message claimed by a worker and not yet acknowledged."""
    return f"mistudio.inflight.{queue}"


def queue_leases(queue: str) -> str:
    """Sorted set lease_id -> deadline (Redis TIME, seconds) of in-flight messages."""
    return f"mistudio.leases.{queue}"


def queue_lease_info(queue: str) -> str:
    """Hash lease_id -> JSON {job_id, counter, worker, score, claimed} for in-flight messages."""
    return f"mistudio.leaseinfo.{queue}"


def queue_dead(queue: str) -> str:
    """Hash key -> message that exhausted its attempts or cannot run (dead letters); the key is
    the job id, or for a message without a valid id one unique to that message."""
    return f"mistudio.dead.{queue}"


def queue_dead_info(queue: str) -> str:
    """Hash key (as in queue_dead) -> JSON {reason, job_id, at}: why the message is dead."""
    return f"mistudio.deadinfo.{queue}"


def queue_attempts(queue: str) -> str:
    """Hash job_id (or '#' + sha1 of a message without an id) -> number of deliveries so far."""
    return f"mistudio.attempts.{queue}"


def queue_notify(queue: str) -> str:
    """Short list a worker blocks on (BRPOP) to wake the moment a message arrives."""
    return f"mistudio.notify.{queue}"


def queue_seq() -> str:
    """Counter that orders messages of equal priority (FIFO), shared by all queues."""
    return "mistudio.queue.seq"


# --- job records (DB results) ---------------------------------------------------


def job(job_id: str) -> str:
    """Hash: the job record (state, task, queue, config, attempts, worker, times, error)."""
    return f"mistudio:job:{job_id}"


def job_progress(job_id: str) -> str:
    """JSON progress snapshot, TTL 1 h (the seed's celery-task-progress-*)."""
    return f"mistudio:job:{job_id}:progress"


def job_result(job_id: str) -> str:
    """JSON result or error, TTL 24 h (the seed's celery-task-meta-*)."""
    return f"mistudio:job:{job_id}:result"


def job_cancel(job_id: str) -> str:
    """Flag set when a user cancels a job; workers poll it."""
    return f"mistudio:job:{job_id}:cancel"


def jobs_index() -> str:
    """Sorted set job_id -> created time, for listing jobs without SCAN."""
    return "mistudio:jobs"


def job_finished_channel() -> str:
    """Pub/sub channel on which a job id is published when its job ends (wakes waiters)."""
    return "mistudio:jobs:finished"


# --- services (DB locks) --------------------------------------------------------


def workers_registry() -> str:
    """Sorted set worker_id -> last heartbeat time, for listing workers without KEYS."""
    return "workers:registry"


def worker_heartbeat(worker_id: str) -> str:
    """JSON heartbeat with a 30 s TTL (the seed's name)."""
    return f"worker:{worker_id}:heartbeat"


def worker_jobs(worker_id: str) -> str:
    """Set of job ids a worker is running (the seed's name)."""
    return f"worker:{worker_id}:jobs"


def job_assignment(job_id: str) -> str:
    """Hash worker_id / assigned_at / status (the seed's name)."""
    return f"job:{job_id}:assignment"


def gpu_lock(device_id: str) -> str:
    """String "{fence}|{owner}", PX lease: who may use this device's GPU (the seed's name)."""
    return f"lock:gpu:{device_id}"


def gpu_fence(device_id: str) -> str:
    """Counter, never expires: the fencing token of each new GPU lock holder (INCR)."""
    return f"lock:gpu:{device_id}:fence"


def cluster_leader() -> str:
    """String "{term}|{node_id}", PX lease: the node running cluster duties (the seed's name)."""
    return "cluster:leader"


def cluster_term() -> str:
    """Counter, never expires: the term of each new leader (INCR)."""
    return "cluster:leader:term"


def metrics_last() -> str:
    """JSON: the leader's last Redis metrics sample (rates are computed against it)."""
    return "monitoring:metrics:last"


def alerts_active() -> str:
    """JSON list of the alerts active at the leader's last evaluation (short TTL)."""
    return "monitoring:alerts:active"


# --- rate and concurrency limits (DB ratelimit) -----------------------------------


def ratelimit_window(subject: str, tier: str, seconds: float) -> str:
    """Sorted set request id -> Redis TIME of one sliding window (the seed's ratelimit:global:api + length)."""
    return f"ratelimit:{subject}:{tier}:{seconds:g}s"


def concurrency_slots(scope: str, name: str) -> str:
    """Sorted set holder token -> lease expiry: who holds the slots of one concurrency limit."""
    return f"concurrency:{scope}:{name}"


# --- pub/sub channels (global) and their history (DB pubsub) ---------------------


def training_channel(training_id: str) -> str:
    return f"training:{training_id}"


def features_channel(training_id: str) -> str:
    return f"features:{training_id}"


def dataset_download_channel(dataset_id: str) -> str:
    return f"dataset:{dataset_id}:download"


def dataset_process_channel(dataset_id: str) -> str:
    """Tokenization progress (not in the seed, which names only downloads)."""
    return f"dataset:{dataset_id}:process"


def model_download_channel(model_id: str) -> str:
    return f"model:{model_id}:download"


SYSTEM_STATUS_CHANNEL = "system:status"
SYSTEM_ALERTS_CHANNEL = "system:alerts"


def event_history(channel: str) -> str:
    """Capped stream of every event published on a channel (late joiners read it)."""
    return f"events:{channel}:history"


def event_latest(channel: str) -> str:
    """The latest event on a channel (a snapshot for a quick look)."""
    return f"events:{channel}:latest"


def event_seq(channel: str) -> str:
    """Per-channel monotonic sequence counter."""
    return f"events:{channel}:seq"


# --- the cache (DB cache); its value keys are the seed's, in mistudio.cache.POLICIES ----


def cache_stats(namespace: str) -> str:
    """Hash hits / misses / stale of one cache namespace."""
    return f"cache:stats:{namespace}"


# --- embedded-server self check --------------------------------------------------

PROBE_KEY = "mistudio:probe"


# --- families: every key and channel above starts with one of these prefixes ------------
# The app's Redis user may touch only these (mistudio.redis.acl turns them into ~key and
# &channel patterns); tests/test_redis_security.py checks every name above against them.

KEY_PREFIXES: dict[str, str] = {
    "huey.": "Huey's own keys: pending queue, schedule, results (DB queue)",
    "mistudio.": "queue leases, in-flight messages, dead letters, attempts, wake-up lists (DB queue)",
    "mistudio:": "job records with their progress, result and cancel flag, the job index; the probe (DB results)",
    "workers:": "the worker registry (DB locks)",
    "worker:": "heartbeats and running-job sets (DB locks)",
    "job:": "job assignments (DB locks)",
    "lock:": "GPU locks and fencing counters (DB locks)",
    "cluster:": "leader lease and term (DB locks)",
    "monitoring:": "the leader's last metrics sample and active alerts (DB locks)",
    "ratelimit:": "rate-limit windows (DB ratelimit)",
    "concurrency:": "concurrency slots (DB ratelimit)",
    "events:": "event history streams, latest snapshots, sequence counters (DB pubsub)",
    "cache:": "cached values, stale copies, stampede guards, hit counters (DB cache)",
}

CHANNEL_PREFIXES: dict[str, str] = {
    "training:": "training progress",
    "features:": "feature extraction progress",
    "dataset:": "dataset downloads and processing",
    "model:": "model downloads",
    "system:": "system status and alerts",
    "mistudio:": "job-finished wake-ups",
}
