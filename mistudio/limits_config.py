"""Resource protection in one place: rate tiers, concurrency limits, alert thresholds.

The numbers are the seed's ("Use Case 3: Rate Limiting" and "Alerting Thresholds").
Change them here; nothing else in miStudio repeats them. Profiles never shrink them.

Rate windows are written "N/period" and parsed by the `limits` library
(`limits.parse`); the counting itself is ours (see mistudio/limits.py for why).
"""

from __future__ import annotations

# --- rate limits: sliding windows ------------------------------------------------------
# A request is admitted only if EVERY window of EVERY tier it counts against has room;
# it is then counted in all of them at once, and a rejected request counts in none.

API_TIER = "api"  # every submitted job counts against it, whatever its task; a task's spec
# (`@task(rate_tier=...)`, mistudio/queue/tasks.py) names the one other tier it counts against

RATE_TIERS: dict[str, tuple[str, ...]] = {
    # The seed's "100/min, burst 10": 100 in any minute, and at most 10 of them in any one
    # second, so a loop cannot spend the whole minute's budget in one instant.
    "api": ("100/minute", "10/second"),
    "training_starts": ("5/hour",),
    "downloads": ("10/hour",),
    "generations": ("20/hour",),  # feature steering (no queued task yet: call limits.hit directly)
    "dataset_processing": ("5/hour",),
}

# --- concurrency limits: leases held while the work runs, per device ---------------------
# These protect one machine's GPU, CPU, disk and network, so each device has its own slots.
# A task's spec (`@task(slot=...)`) names the slot its jobs hold while they run.

CONCURRENCY: dict[str, int] = {
    "trainings": 1,
    "downloads": 2,
    "generations": 1,
    "processing": 1,
}

# --- alert thresholds: (warning, critical); an alert fires when value >= threshold --------

ALERTS: dict[str, tuple[float, float]] = {
    "memory_usage": (0.70, 0.85),  # used_memory / maxmemory (no maxmemory: not evaluated)
    "cpu_usage": (0.60, 0.80),  # Redis' CPU seconds per wall second (fraction of one core)
    "evicted_keys_per_min": (100, 500),
    "blocked_clients": (5, 10),  # beyond our own idle workers' BRPOPs (see mistudio/monitoring.py)
    "replication_lag": (5, 30),  # seconds
}
