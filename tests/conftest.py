"""Shared fixtures: a private embedded Redis for the test session, and real worker processes.

The session gets its own MISTUDIO_HOME (under pytest's tmp dir) and its own
redis-server on a free port, started by the same launcher `mistudio up` uses, so
tests never depend on a system Redis. MISTUDIO_PROFILE=ci keeps sizes small.

Everything runs as the app's Redis user, as in production; only the fixtures that must
flush or CONFIG SET use the admin user (`redis_admin`). At the end of the session the
server's ACL LOG must be empty: nothing miStudio did was refused to the app user.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from helpers import WorkerProcs

# Before anything imports mistudio.settings users: tests never touch ~/.mistudio or an external Redis.
for _name in ("REDIS_URL", "REDIS_PASSWORD", "REDIS_USERNAME", "MISTUDIO_REDIS_PORT", "MISTUDIO_REDIS_BIND",
              "MISTUDIO_REDIS_ALLOW_REMOTE", "MISTUDIO_CACHE_MEMORY_SHARE", "MISTUDIO_LEASE_SECONDS"):
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
    refused = _acl_log()
    server.stop()
    reset_pools()
    assert not refused, (
        "Redis refused the app user (ACL LOG); add the key family to mistudio/redis/keys.py or the command "
        f"to mistudio/redis/acl.py if miStudio needs it: {refused}")


def _acl_log() -> list[dict]:
    from mistudio.redis.connection import admin_client

    try:
        entries = admin_client().acl_log()
    except Exception:  # the server is gone already (a test stopped it): nothing to report
        return []
    # Failed logins are the tests of wrong passwords; refused commands, keys and channels are not.
    return [{k: e.get(k) for k in ("reason", "object", "username", "count")} for e in entries if e["reason"] != "auth"]


@pytest.fixture
def private_redis(tmp_path, monkeypatch):
    """A server of this test's own, to kill and restart (its state: pid, port...);
    the session's server is shared by every other test."""
    from mistudio.redis import server
    from mistudio.redis.connection import reset_pools

    monkeypatch.setenv("MISTUDIO_HOME", str(tmp_path / "home"))
    reset_pools()
    state = server.start()
    yield state
    server.stop()
    reset_pools()


@pytest.fixture
def redis_admin(redis_server):
    """admin("queue"): a client as the admin user, for tests that must CONFIG SET or write
    outside miStudio's key families. ACL LOG entries a test provokes on purpose it resets."""
    from mistudio.redis.connection import admin_client

    return admin_client


@pytest.fixture
def redis_db(redis_server):
    """A clean Redis for one test: no background workers (a notebook's `mistudio up` may have
    started some), every database flushed (as the admin user). Returns get_client (the app user)."""
    from mistudio.queue import supervisor
    from mistudio.redis.connection import admin_client, get_client

    supervisor.stop_workers()
    admin_client().flushall()
    return get_client


@pytest.fixture
def workers(redis_db, tmp_path):
    procs = WorkerProcs(tmp_path)
    yield procs
    procs.stop_all()
