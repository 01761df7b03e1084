"""Cache-aside for expensive statistics, with the seed's keys and TTLs in one policy table.

    stats = cache.get_or_compute("features", compute, training_id="tr_abc")

    @cache.cached("api", key=lambda path: {"path": path})
    def answer(path): ...

- Hit/miss counters per namespace (`cache:stats:{namespace}` hashes) and `hit_rate()`.
- A stampede guard: one computation per key at a time; other callers get the stale copy
  (kept a while past the TTL) if there is one, else wait for the computing caller.
- Invalidation: `invalidate(namespace, **params)`, `invalidate_training(training_id)` on a
  new checkpoint or extraction; `clear(namespace)` uses SCAN (never KEYS).
- A memory budget: the cache writes only while Redis stays below MISTUDIO_CACHE_MEMORY_SHARE
  (default 60 %) of maxmemory (INFO used_memory, sampled at most once a second per process,
  plus what this process wrote since), so the cache can never take the memory that job
  records, queues, heartbeats, leases and leader election need.
- Past the budget, or when Redis refuses a write for memory (`noeviction`), the computed
  value is served uncached, counted (`uncached`), and a `system.alert` goes out: queued jobs
  are never evicted to make room for a cache.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import redis

from mistudio import events
from mistudio.errors import InvalidInput
from mistudio.redis import keys
from mistudio.redis.connection import get_client, is_out_of_memory
from mistudio.redis.scripts import script
from mistudio.settings import get_settings

logger = logging.getLogger("mistudio.cache")


@dataclass(frozen=True)
class Policy:
    template: str  # key, with {params}
    ttl: int  # seconds
    kind: str = "json"  # "json" (a string) or "hash" (one JSON-encoded value per field)


# The seed's cache keys and TTLs ("Time-Based TTL Strategy").
POLICIES: dict[str, Policy] = {
    "features": Policy("cache:features:{training_id}:stats", 3600),
    "model": Policy("cache:model:{model_id}:metadata", 86400, kind="hash"),
    "dataset": Policy("cache:dataset:{dataset_id}:stats", 86400),
    "correlations": Policy("cache:correlations:{training_id}:top{k}", 7200),
    "checkpoints": Policy("cache:checkpoints:{training_id}:list", 300),
    "api": Policy("cache:api:{path}", 60),
}

STALE_GRACE = 3  # a stale copy lives STALE_GRACE x TTL: served while a recomputation runs
LOCK_SECONDS = 120  # longest a computation may hold a key's guard
ALERT_EVERY = 60.0  # seconds between alerts about refused cache writes, per namespace
BUDGET_SAMPLE_SECONDS = 1.0  # how stale the budget's INFO used_memory may be
KEY_OVERHEAD = 128  # bytes Redis spends per key beyond its name and value (dict entry, expiry, object)

_local_uncached: dict[str, int] = {}
_last_alert: dict[str, float] = {}
_lock = threading.Lock()


def _client():
    return get_client("cache")


def policy(namespace: str) -> Policy:
    try:
        return POLICIES[namespace]
    except KeyError:
        raise InvalidInput("namespace", f"unknown cache namespace {namespace!r}",
                           f"use one of {', '.join(POLICIES)} (or add a policy to mistudio.cache.POLICIES)") from None


def key_for(namespace: str, **params) -> str:
    try:
        return policy(namespace).template.format(**params)
    except KeyError as exc:
        raise InvalidInput(str(exc.args[0]), f"the {namespace} cache key needs it", f"pass {exc.args[0]}=...") from None


class _Budget:
    """May the cache write `n` more bytes and keep Redis below share x maxmemory? One INFO memory
    per BUDGET_SAMPLE_SECONDS per process; bytes written since are added to that sample, so a burst
    of writes cannot overshoot by more than what other processes write within a second."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sampled_at = float("-inf")
        self._used = 0
        self._maxmemory = 0

    def allows(self, client, nbytes: int, share: float) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._sampled_at >= BUDGET_SAMPLE_SECONDS:
                info = client.info("memory")
                self._used, self._maxmemory = int(info["used_memory"]), int(info.get("maxmemory") or 0)
                self._sampled_at = now
            if not self._maxmemory:  # no maxmemory: nothing to keep headroom in
                return True
            if self._used + nbytes > share * self._maxmemory:
                return False
            self._used += nbytes
            return True

    def describe(self, share: float) -> str:
        return (f"Redis holds {self._used / 2**20:.1f} MiB, the cache's budget is {share:.0%} of maxmemory "
                f"({share * self._maxmemory / 2**20:.1f} of {self._maxmemory / 2**20:.1f} MiB, "
                "MISTUDIO_CACHE_MEMORY_SHARE)")


_budget = _Budget()


def _stale_key(key: str) -> str:
    return f"{key}:stale"


def _guard_key(key: str) -> str:
    return f"{key}:computing"


# --- reading and writing -------------------------------------------------------------


def _read(client, key: str, kind: str):
    if kind == "hash":
        raw = client.hgetall(key)
        return {k: json.loads(v) for k, v in raw.items()} if raw else None
    raw = client.get(key)
    return None if raw is None else json.loads(raw)


def _write(client, key: str, value, pol: Policy, namespace: str) -> bool:
    """Store value with its TTL (and a longer-lived stale copy). False, served uncached, past the
    memory budget or if Redis refused for memory."""
    encoded = json.dumps(value, separators=(",", ":"))
    share = get_settings().cache_memory_share
    if not _budget.allows(client, 2 * (len(key) + len(encoded) + KEY_OVERHEAD), share):  # value + stale copy
        _refused(namespace, key, f"the cache is at its memory budget: {_budget.describe(share)}")
        return False
    pipe = client.pipeline(transaction=True)
    if pol.kind == "hash":
        if not isinstance(value, dict) or not value:
            raise InvalidInput("value", f"the {namespace} cache holds a non-empty dict per key", "return a dict")
        pipe.delete(key)
        pipe.hset(key, mapping={k: json.dumps(v) for k, v in value.items()})
        pipe.expire(key, pol.ttl)
    else:
        pipe.set(key, encoded, ex=pol.ttl)
    pipe.set(_stale_key(key), encoded, ex=pol.ttl * STALE_GRACE)
    try:
        pipe.execute()
        return True
    except redis.exceptions.ResponseError as exc:
        if not is_out_of_memory(exc):
            raise
        _refused(namespace, key, "Redis refused the write for memory (maxmemory reached, noeviction)")
        return False


def _refused(namespace: str, key: str, why: str) -> None:
    """A value not cached for memory: count it and tell the operators (rate-limited)."""
    with _lock:
        _local_uncached[namespace] = _local_uncached.get(namespace, 0) + 1
        now = time.monotonic()
        alert = now - _last_alert.get(namespace, -ALERT_EVERY) >= ALERT_EVERY
        if alert:
            _last_alert[namespace] = now
    logger.warning("%s served uncached: %s", key, why)
    if alert:
        try:
            events.publish(keys.SYSTEM_ALERTS_CHANNEL, "system.alert", {
                "level": "warning", "source": "cache", "namespace": namespace,
                "message": f"the {namespace} cache is serving values uncached: {why}. "
                           "Fix: `mistudio cache clear`, or raise maxmemory",
            })
        except Exception:
            logger.exception("could not publish the alert")


def _count(client, namespace: str, field: str) -> None:
    try:
        client.hincrby(keys.cache_stats(namespace), field, 1)
    except redis.exceptions.ResponseError as exc:  # OOM: keep the count here for stats()
        if not is_out_of_memory(exc):
            raise
        with _lock:
            _local_uncached[f"{namespace}:{field}"] = _local_uncached.get(f"{namespace}:{field}", 0) + 1


def get_or_compute(namespace: str, compute: Callable[[], object], *, wait: float = 60.0, **params):
    """The cached value for (namespace, params), computing and storing it on a miss."""
    pol = policy(namespace)
    key = key_for(namespace, **params)
    client = _client()
    value = _read(client, key, pol.kind)
    if value is not None:
        _count(client, namespace, "hits")
        return value
    _count(client, namespace, "misses")
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait
    while True:
        try:
            guarded = client.set(_guard_key(key), token, nx=True, ex=LOCK_SECONDS)
        except redis.exceptions.ResponseError as exc:  # OOM: no guard can be taken; compute
            if not is_out_of_memory(exc):
                raise
            guarded = None
            token = None
        if guarded or token is None:
            try:
                # Between our miss and the guard, another caller may have computed, stored and let
                # go: theirs is the value (else a slow thread would compute a second time).
                value = _read(client, key, pol.kind) if guarded else None
                if value is not None:
                    return value
                value = compute()
                _write(client, key, value, pol, namespace)
                return value
            finally:
                if token is not None:
                    script(client, "lock_release")(keys=[_guard_key(key)], args=[token])
        # Someone else is computing: serve the stale copy, or wait for theirs.
        stale = client.get(_stale_key(key))
        if stale is not None:
            _count(client, namespace, "stale")
            return json.loads(stale)
        time.sleep(0.02)
        value = _read(client, key, pol.kind)
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {wait} s for another process computing {key}")


def cached(namespace: str, key: Callable[..., dict]):
    """Decorator: cache a function's result under namespace; key(*args, **kwargs) gives the key params."""

    def decorator(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return get_or_compute(namespace, lambda: fn(*args, **kwargs), **key(*args, **kwargs))

        wrapper.invalidate = lambda *args, **kwargs: invalidate(namespace, **key(*args, **kwargs))
        return wrapper

    return decorator


# --- invalidation ----------------------------------------------------------------------


def invalidate(namespace: str, **params) -> int:
    key = key_for(namespace, **params)
    return _client().delete(key, _stale_key(key))


def _delete_matching(pattern: str) -> int:
    client = _client()
    deleted = 0
    batch = []
    for key in client.scan_iter(match=pattern, count=500):
        batch.append(key)
        if len(batch) >= 500:
            deleted += client.unlink(*batch)
            batch = []
    if batch:
        deleted += client.unlink(*batch)
    return deleted


def invalidate_training(training_id: str) -> int:
    """A new checkpoint or extraction: drop everything cached about this training run."""
    client = _client()
    removed = 0
    for namespace in ("features", "checkpoints"):
        key = key_for(namespace, training_id=training_id)
        removed += client.delete(key, _stale_key(key))
    removed += _delete_matching(f"cache:correlations:{training_id}:top*")
    return removed


def clear(namespace: str | None = None) -> int:
    """Delete every key of a namespace (SCAN, never KEYS); None: of every namespace, with their counters."""
    if namespace is None:
        return sum(clear(name) for name in POLICIES) + _client().delete(*(keys.cache_stats(n) for n in POLICIES))
    prefix = policy(namespace).template.split("{", 1)[0]
    return _delete_matching(f"{prefix}*")


# --- statistics -------------------------------------------------------------------------


def stats(namespace: str) -> dict:
    raw = _client().hgetall(keys.cache_stats(namespace))
    out = {name: int(raw.get(name, 0)) for name in ("hits", "misses", "stale")}
    with _lock:
        out["uncached"] = _local_uncached.get(namespace, 0)
        for name in ("hits", "misses", "stale"):
            out[name] += _local_uncached.get(f"{namespace}:{name}", 0)
    return out


def hit_rate(namespace: str) -> float:
    """Hits as a percentage of lookups (the seed's get_cache_hit_rate); 0.0 before any lookup."""
    s = stats(namespace)
    total = s["hits"] + s["misses"]
    return 100.0 * s["hits"] / total if total else 0.0


def reset_stats(namespace: str) -> None:
    _client().delete(keys.cache_stats(namespace))
    with _lock:
        for name in list(_local_uncached):
            if name == namespace or name.startswith(f"{namespace}:"):
                del _local_uncached[name]
