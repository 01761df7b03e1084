"""Queue latency: enqueue, and enqueue-to-start on an idle worker, against raw Redis.

    python benchmarks/bench_queue.py [--n 300]

Starts a private embedded Redis (its own MISTUDIO_HOME) and one `cpu` worker, then
measures, in the same run:
- raw round trip: LPUSH then BRPOP of a small message with redis-py (the baseline);
- enqueue latency: `jobs.submit(...)` (validation, job record, Lua enqueue);
- enqueue-to-start: from just before submit to the task function's first line, on an
  idle worker (the worker is blocked on its wake-up list when the job arrives).
Goals (issue 3): enqueue p99 <= 2 ms; enqueue-to-start p50 within 5x the raw round trip.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from common import pct, private_redis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()

    with private_redis("queue", rate_limits=False):  # we submit hundreds of jobs a second on purpose
        measure(args.n)


def measure(n: int) -> None:
    from mistudio import jobs
    from mistudio.redis import keys
    from mistudio.redis.connection import get_client

    worker = subprocess.Popen([sys.executable, "-m", "mistudio.cli", "worker", "--queue", "cpu"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = get_client("queue")
        raw = []
        for _ in range(n):
            t0 = time.perf_counter()
            client.lpush(keys.PROBE_KEY, b'{"id":"x","task":"echo"}')
            client.brpop(keys.PROBE_KEY, timeout=1)
            raw.append(time.perf_counter() - t0)

        # warm up: the worker is up and the scripts are loaded
        jobs.submit("diagnostics.echo", {"warm": True}).result(timeout=60)

        enqueue, to_start = [], []
        for i in range(n):
            t_wall = time.time()
            t0 = time.perf_counter()
            job = jobs.submit("diagnostics.echo", {"i": i})
            enqueue.append(time.perf_counter() - t0)
            started = job.result(timeout=30)["started"]
            to_start.append(started - t_wall)

        ms = lambda v: f"{1000 * v:.3f} ms"  # noqa: E731
        raw_p50 = statistics.median(raw)
        print(f"raw LPUSH+BRPOP round trip   p50 {ms(raw_p50)}  p99 {ms(pct(raw, 99))}")
        print(f"enqueue (jobs.submit)        p50 {ms(statistics.median(enqueue))}  p99 {ms(pct(enqueue, 99))}"
              f"  (goal p99 <= 2 ms)")
        print(f"enqueue-to-start (idle)      p50 {ms(statistics.median(to_start))}  p99 {ms(pct(to_start, 99))}")
        print(f"ratio enqueue-to-start p50 / raw round trip p50 = {statistics.median(to_start) / raw_p50:.1f}x"
              f"  (goal <= 5x)")
        print(f"ratio enqueue p50 / raw round trip p50 = {statistics.median(enqueue) / raw_p50:.1f}x")
    finally:
        worker.terminate()
        worker.wait(10)


if __name__ == "__main__":
    main()
