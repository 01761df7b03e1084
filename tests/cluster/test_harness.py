"""The harness itself: hosts reach each other only over their links, a cut link cuts them off,
kill_all ends every process of a host, and close() leaves no namespace, link or process."""

from __future__ import annotations

import subprocess
import sys
import time

import netns
from helpers import wait_for


PORT = 7070
LISTEN = f"import socket, time; s = socket.socket(); s.bind(('0.0.0.0', {PORT})); s.listen(); time.sleep(600)"
ENV = {"PATH": "/usr/bin:/bin"}


def _reaches(host: netns.Host, address: str) -> bool:
    """A TCP connection from host to address's listener gets through (within 2 s)."""
    connect = f"import socket; socket.create_connection(({address!r}, {PORT}), timeout=2)"
    return host.run_once([sys.executable, "-c", connect], ENV, timeout=30).returncode == 0


def test_hosts_are_separate_and_the_teardown_leaves_nothing(netns_available, tmp_path):
    cluster = netns.Cluster(tmp_path)
    try:
        a, b = cluster.add_host("a"), cluster.add_host("b")
        for host in (a, b):
            host.run([sys.executable, "-c", LISTEN], ENV, "listen")
        time.sleep(0.5)
        assert wait_for(lambda: _reaches(a, b.address) and _reaches(b, a.address), timeout=20)
        own = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
        assert netns.SUBNET not in own  # the machine's own network never sees the cluster's addresses

        a.link_down()
        assert not _reaches(a, b.address) and not _reaches(b, a.address)
        a.link_up()
        assert wait_for(lambda: _reaches(a, b.address), timeout=20)

        sleeper = a.run(["sleep", "600"], ENV, "sleep")
        orphan = a.run(["sh", "-c", "setsid sleep 600 & wait"], ENV, "orphan")  # one in a session of its own
        wait_for(lambda: len(a.pids()) >= 4, timeout=20, message="four processes on host a")
        a.kill_all()
        assert a.pids() == [] and sleeper.returncode is not None and orphan.returncode is not None
        b.run(["sleep", "600"], ENV, "sleep")
    finally:
        cluster.close()
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert cluster.prefix not in names
    assert all(p.poll() is not None for p in b.procs)  # close() killed what still ran


def test_the_cluster_tests_fail_instead_of_skipping_in_ci():
    assert netns.required({"CI": "true"}) and netns.required({"MISTUDIO_REQUIRE_CLUSTER": "1"})
    assert not netns.required({}) and not netns.required({"CI": "false"})
