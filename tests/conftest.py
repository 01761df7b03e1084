"""Shared fixtures: a private embedded Redis for the test session, and real worker processes.

The session gets its own MISTUDIO_HOME (under pytest's tmp dir) and its own
redis-server on a free port, started by the same launcher `mistudio up` uses, so
tests never depend on a system Redis. MISTUDIO_PROFILE=ci keeps sizes small.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

# Before anything imports mistudio.settings users: tests never touch ~/.mistudio or an external Redis.
for _name in ("REDIS_URL", "REDIS_PASSWORD", "MISTUDIO_REDIS_PORT", "MISTUDIO_REDIS_BIND", "MISTUDIO_LEASE_SECONDS"):
    os.environ.pop(_name, None)
os.environ["MISTUDIO_PROFILE"] = "ci"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
_HOME = Path(tempfile.mkdtemp(prefix="mistudio-test-home-"))
os.environ["MISTUDIO_HOME"] = str(_HOME)

REPO = Path(__file__).resolve().parents[1]


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def mistudio_home() -> Path:
    """The test session's MISTUDIO_HOME (a fresh temporary folder)."""
    return _HOME


@pytest.fixture(scope="session")
def redis_server(mistudio_home):
    """The session's embedded Redis (state dict: host, port, pid, version...)."""
    from mistudio.redis import server
    from mistudio.redis.connection import reset_pools

    state = server.start()
    reset_pools()
    yield state
    server.stop()
    reset_pools()


@pytest.fixture
def redis_db(redis_server):
    """A clean Redis for one test: every database flushed before it runs."""
    from mistudio.redis.connection import get_client

    get_client("queue").flushall()
    return get_client


def _env(**overrides) -> dict:
    env = os.environ.copy()
    env.update({k: str(v) for k, v in overrides.items()})
    return env


class WorkerProcs:
    """Start real `mistudio worker` consumer processes; all are killed after the test."""

    def __init__(self, log_dir: Path):
        self.procs: list[subprocess.Popen] = []
        self.log_dir = log_dir

    def start(self, queue: str, *, lease: float = 3.0, wait: bool = True, **env) -> subprocess.Popen:
        log = open(self.log_dir / f"worker-{queue}-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "mistudio.cli", "worker", "--queue", queue],
            stdout=log, stderr=subprocess.STDOUT, env=_env(MISTUDIO_LEASE_SECONDS=lease, **env),
        )
        proc.log_path = log.name
        self.procs.append(proc)
        if wait:
            self.wait_ready(proc)
        return proc

    def wait_ready(self, proc: subprocess.Popen, timeout: float = 30.0) -> None:
        """Until the worker's heartbeat is in Redis (it is consuming)."""
        from mistudio.coord.heartbeat import healthy_workers
        from mistudio.redis.connection import get_client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}:\n{Path(proc.log_path).read_text()}")
            if any(w["pid"] == proc.pid for w in healthy_workers(get_client("locks"))):
                return
            time.sleep(0.05)
        raise TimeoutError(f"worker {proc.pid} did not start:\n{Path(proc.log_path).read_text()}")

    def log(self, proc) -> str:
        return Path(proc.log_path).read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def workers(redis_db, tmp_path):
    procs = WorkerProcs(tmp_path)
    yield procs
    procs.stop_all()
