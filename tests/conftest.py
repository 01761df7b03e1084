"""Shared fixtures: a private embedded Redis for the test session, and real worker processes.

The session gets its own MISTUDIO_HOME (under pytest's tmp dir) and its own
redis-server on a free port, started by the same launcher `mistudio up` uses, so
tests never depend on a system Redis. MISTUDIO_PROFILE=ci keeps sizes small.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from helpers import WorkerProcs

# Before anything imports mistudio.settings users: tests never touch ~/.mistudio or an external Redis.
for _name in ("REDIS_URL", "REDIS_PASSWORD", "MISTUDIO_REDIS_PORT", "MISTUDIO_REDIS_BIND", "MISTUDIO_LEASE_SECONDS"):
    os.environ.pop(_name, None)
os.environ["MISTUDIO_PROFILE"] = "ci"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
_HOME = Path(tempfile.mkdtemp(prefix="mistudio-test-home-"))
os.environ["MISTUDIO_HOME"] = str(_HOME)
os.environ["MISTUDIO_TEST_HOME"] = str(_HOME)  # notebooks/conftest.py: run in this session's home

REPO = Path(__file__).resolve().parents[1]


def pytest_sessionfinish(session, exitstatus):
    """Stop what the session started (notebooks run `mistudio up`), then remove its home."""
    os.environ["MISTUDIO_HOME"] = str(_HOME)
    try:
        from mistudio import lifecycle

        lifecycle.down()
    except Exception:
        pass
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
    """A clean Redis for one test: no background workers (a notebook's `mistudio up` may have
    started some), every database flushed."""
    from mistudio.queue import supervisor
    from mistudio.redis.connection import get_client

    supervisor.stop_workers()
    get_client("queue").flushall()
    return get_client


@pytest.fixture
def workers(redis_db, tmp_path):
    procs = WorkerProcs(tmp_path)
    yield procs
    procs.stop_all()
