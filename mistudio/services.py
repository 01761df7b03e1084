"""Background services that `mistudio up` starts: detached processes with recorded PIDs.

A service runs in its own session, logs to MISTUDIO_HOME/logs/{name}.log and holds none
of the caller's stdin/stdout/stderr, so `mistudio up | tee` (or any subprocess caller)
returns at once. Its record (MISTUDIO_HOME/run/{name}.json) keeps the PID and the
process start time, so a recycled PID is never mistaken for our service.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from mistudio.settings import Settings

# Popen objects of services this process started, so their exit can be reaped (no zombies).
_children: dict[int, subprocess.Popen] = {}


@dataclass
class ServiceRecord:
    name: str
    pid: int
    create_time: float
    argv: list[str]
    log: str
    started_at: float
    extra: dict = field(default_factory=dict)


def record_path(settings: Settings, name: str) -> Path:
    return settings.pid_dir / f"{name}.json"


def log_path(settings: Settings, name: str) -> Path:
    return settings.logs_dir / f"{name}.log"


def _write_json_atomic(path: Path, data: dict, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def start_detached(
    name: str, argv: list[str], settings: Settings, *, env: dict | None = None, extra: dict | None = None
) -> ServiceRecord:
    """Start argv in a new session with output to the service's log; record its PID."""
    log = log_path(settings, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
        )
    _children[proc.pid] = proc
    try:
        create_time = psutil.Process(proc.pid).create_time()
    except psutil.Error:
        create_time = 0.0
    record = ServiceRecord(name, proc.pid, create_time, list(argv), str(log), time.time(), dict(extra or {}))
    _write_json_atomic(record_path(settings, name), asdict(record))
    return record


def read_record(settings: Settings, name: str) -> ServiceRecord | None:
    path = record_path(settings, name)
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return ServiceRecord(**data)


def list_records(settings: Settings, prefix: str = "") -> list[ServiceRecord]:
    if not settings.pid_dir.exists():
        return []
    records = []
    for path in sorted(settings.pid_dir.glob(f"{prefix}*.json")):
        record = read_record(settings, path.stem)
        if record is not None:
            records.append(record)
    return records


def remove_record(settings: Settings, name: str) -> None:
    record_path(settings, name).unlink(missing_ok=True)


def is_running(record: ServiceRecord | None) -> bool:
    """True if the recorded process is alive and is the one we started (not a reused PID)."""
    if record is None:
        return False
    child = _children.get(record.pid)
    if child is not None and child.poll() is not None:
        _children.pop(record.pid, None)
        return False
    try:
        proc = psutil.Process(record.pid)
        if record.create_time and abs(proc.create_time() - record.create_time) > 1.0:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_exit(record: ServiceRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(record):
            return True
        time.sleep(0.05)
    return not is_running(record)


def stop(record: ServiceRecord, *, timeout: float = 15.0, sig: int = signal.SIGTERM) -> bool:
    """Send sig, wait up to timeout, then SIGKILL. True if the process is gone."""
    if not is_running(record):
        return True
    try:
        os.kill(record.pid, sig)
    except ProcessLookupError:
        return True
    if wait_exit(record, timeout):
        return True
    try:
        os.kill(record.pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    return wait_exit(record, 5.0)


def tail(path: str | Path, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""
