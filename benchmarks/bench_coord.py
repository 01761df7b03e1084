"""Coordination latency: a rate-limit check, a GPU lock acquire+release, a heartbeat, against raw Redis.

    python benchmarks/bench_coord.py [--n 2000]

Starts a private embedded Redis (its own MISTUDIO_HOME) and measures, in the same run:
- raw round trip: PING with redis-py (the baseline);
- rate-limit check: `limits.hit` over two windows (the API tier's shape: a minute and a
  one-second burst window; limits large enough that every call is admitted and written);
- lock acquire + release: `GpuLock.try_acquire()` then `release()` (two Lua round trips);
- heartbeat: `heartbeat.beat` (SET with TTL + registry ZADD, one pipelined round trip), with a
  resources payload sampled once (sampling is local: its own cost is printed apart).
Seed targets (average): rate-limit check 0.5 ms, lock 1 ms, heartbeat 0.5 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import pct, private_redis


def measure(n: int, fn) -> list[float]:
    for _ in range(min(50, n)):  # warm up: scripts loaded, connections open
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()

    from mistudio import limits
    from mistudio.coord import heartbeat, locks, resources
    from mistudio.redis.connection import get_client

    with private_redis("coord"):
        ping_client = get_client("queue")
        windows = [limits.Window("bench", 10**9, 60), limits.Window("bench_burst", 10**9, 1)]
        lock = locks.GpuLock("bench_device", holder="bench", ttl=60)

        def lock_cycle():
            assert lock.try_acquire()
            lock.release()

        t0 = time.perf_counter()
        payload = {"status": "idle", "queue": "gpu", "device": "bench_device", "active_jobs": [], **resources.sample()}
        sample_cost = time.perf_counter() - t0
        beat_client = get_client("locks")

        results = {
            "raw PING round trip": measure(args.n, ping_client.ping),
            "rate-limit check (2 windows)": measure(args.n, lambda: limits.hit(windows)),
            "lock acquire + release": measure(args.n, lock_cycle),
            "heartbeat": measure(args.n, lambda: heartbeat.beat(beat_client, "bench:gpu:1", payload)),
        }
        targets = {"rate-limit check (2 windows)": 0.5e-3, "lock acquire + release": 1e-3, "heartbeat": 0.5e-3}
        ms = lambda v: f"{1000 * v:.3f} ms"  # noqa: E731
        raw_p50 = statistics.median(results["raw PING round trip"])
        for name, values in results.items():
            line = (f"{name:<30} p50 {ms(statistics.median(values))}  p99 {ms(pct(values, 99))}"
                    f"  mean {ms(statistics.fmean(values))}")
            if name in targets:
                line += (f"  = {statistics.median(values) / raw_p50:.1f}x raw p50"
                         f"  (seed target: {ms(targets[name])} average)")
            print(line)
        print(f"resources.sample() once: {ms(sample_cost)} ({payload['resource_source']}; not in the heartbeat figure)")


if __name__ == "__main__":
    main()
