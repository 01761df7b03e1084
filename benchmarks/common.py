"""What the benchmarks share: a private embedded Redis for the run, and percentiles.

Benchmarks run as scripts (`python benchmarks/bench_x.py`), so this folder is on sys.path.
"""

from __future__ import annotations

import contextlib
import os
import tempfile


def pct(values, q):
    """The q-th percentile (nearest rank) of values."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))]


@contextlib.contextmanager
def private_redis(name: str, *, rate_limits: bool = True):
    """A fresh MISTUDIO_HOME with its own embedded Redis, stopped at the end. Set before mistudio
    reads its settings; rate_limits=False for benchmarks that submit hundreds of jobs a second."""
    os.environ["MISTUDIO_HOME"] = tempfile.mkdtemp(prefix=f"mistudio-bench-{name}-")
    os.environ.pop("REDIS_URL", None)
    if not rate_limits:
        os.environ["MISTUDIO_RATE_LIMITS"] = "off"
    from mistudio.redis import server

    server.start()
    try:
        yield
    finally:
        server.stop()
