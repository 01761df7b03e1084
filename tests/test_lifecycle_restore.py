"""A notebook that changes the services puts them back as they were (03_jobs_and_cluster runs a
short-lease demo in `lifecycle.workers_with`): real worker processes, their real environment."""

from __future__ import annotations

import os

import psutil
import pytest

from mistudio import lifecycle
from mistudio.queue import supervisor

pytestmark = pytest.mark.timeout(180)


def _workers() -> dict[str, tuple[int, list[str], dict]]:
    pids = {q: s["local_worker_pid"] for q, s in supervisor.queue_status()["queues"].items() if s["local_worker_pid"]}
    return {q: (pid, psutil.Process(pid).cmdline(), psutil.Process(pid).environ()) for q, pid in pids.items()}


def test_workers_with_changes_the_workers_for_the_block_only_and_restores_them_exactly(redis_db):
    lifecycle.up()
    try:
        before = _workers()
        assert set(before) == {"gpu", "io", "cpu"}
        assert all("MISTUDIO_LEASE_SECONDS" not in env for _, _, env in before.values())
        with lifecycle.workers_with(MISTUDIO_LEASE_SECONDS=4):
            during = _workers()
            assert set(during) == set(before) and os.environ["MISTUDIO_LEASE_SECONDS"] == "4"
            assert all(env["MISTUDIO_LEASE_SECONDS"] == "4" for _, _, env in during.values())
            assert {pid for pid, _, _ in during.values()}.isdisjoint(pid for pid, _, _ in before.values())
        assert "MISTUDIO_LEASE_SECONDS" not in os.environ
        after = _workers()
        for queue, (_, argv, env) in before.items():
            assert after[queue][1] == argv and after[queue][2] == env, queue

        with pytest.raises(RuntimeError):  # a failing cell inside the block restores them too
            with lifecycle.workers_with(MISTUDIO_LEASE_SECONDS=4):
                raise RuntimeError("the demo failed")
        assert {q: w[2] for q, w in _workers().items()} == {q: w[2] for q, w in before.items()}
    finally:
        supervisor.stop_workers()


def test_workers_with_leaves_none_running_where_none_ran(redis_db):
    with lifecycle.workers_with(MISTUDIO_LEASE_SECONDS=4):
        assert set(_workers()) == {"gpu", "io", "cpu"}
    assert _workers() == {}
