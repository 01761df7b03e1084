"""Small helpers for tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05, message: str = "condition"):
    """Poll predicate until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {message}")


def run_cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `mistudio ARGS` in a subprocess with captured output (a pipe a service must not hold)."""
    full_env = os.environ.copy()
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mistudio.cli", *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )


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
