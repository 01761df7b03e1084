"""Least privilege over the network: a worker host connects as the app user, which the cluster's
Redis refuses every administrative command; a client without a password is refused; a worker
host with no password configured does not start; no password is on any host's command line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)

PROBE = Path(__file__).with_name("probe_acl.py")


def test_the_app_user_over_the_network_is_refused_administration_and_no_password_leaks(make_cluster):
    cluster = make_cluster()
    a = cluster.workers["jetson-a"]
    probe = a.run_once([sys.executable, str(PROBE)], cluster.env(a))
    assert probe.returncode == 0, probe.stderr
    answers = json.loads(probe.stdout.strip().splitlines()[-1])
    assert answers == {"FLUSHALL": "refused", "FLUSHDB": "refused", "CONFIG": "refused", "KEYS": "refused",
                       "DEBUG": "refused", "SHUTDOWN": "refused", "MODULE": "refused", "no password": "refused",
                       "ping as app user": True}, answers
    cluster.clear_acl_log()  # the refusals above were provoked on purpose

    # A worker host given the remote Redis but no password refuses to start, before anything else.
    env = cluster.env(a)
    del env["REDIS_PASSWORD"]
    started = time.monotonic()
    refused = a.run_once([*cluster.cli_argv, "worker", "--queue", "gpu"], env, timeout=60)
    assert refused.returncode != 0 and "REDIS_PASSWORD" in refused.stderr, refused.stderr[-2000:]
    assert time.monotonic() - started < 30

    # A running worker and the client's CLI: the passwords are on no command line of any host.
    cluster.start_worker("jetson-a")
    status = cluster.cli(cluster.client, "status", "--json")
    assert status.returncode == 0 and "jetson-a" in status.stdout, status.stderr[-2000:]
    command_lines = [c for host in cluster.net.hosts.values() for c in host.commands()]
    assert any("mistudio.cli worker" in c for c in command_lines) and any("redis-server" in c for c in command_lines)
    for secret in (cluster.app_password, cluster.admin_password):
        assert not any(secret in c for c in command_lines)
        assert not any(secret in text for host in cluster.net.hosts.values() for text in host.logs().values())
