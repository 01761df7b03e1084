"""The cluster tests: separate hosts in network namespaces (tests/cluster/netns.py).

They need root and `ip netns`. Elsewhere they are skipped with the reason; in CI
(CI=true or MISTUDIO_REQUIRE_CLUSTER=1) a missing capability fails them instead, so a CI
runner that lost root never passes them silently.
"""

from __future__ import annotations

import pytest

from netns import required, unavailable_reason
from rig import MistudioCluster


@pytest.fixture(scope="session")
def netns_available():
    reason = unavailable_reason()
    if reason:
        if required():
            pytest.fail(f"{reason} (CI / MISTUDIO_REQUIRE_CLUSTER=1: the cluster tests must run)")
        pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.cluster_failed = report.failed


def _print_logs(cluster: MistudioCluster, lines: int = 40) -> None:
    """A failed test shows the end of every host's logs (its tmp folder may be gone by the time one looks)."""
    for host in cluster.net.hosts.values():
        for name, text in host.logs().items():
            print(f"----- {host.name}/{name}.log (last {lines} lines)")
            print("\n".join(text.splitlines()[-lines:]))


@pytest.fixture
def make_cluster(netns_available, tmp_path, request):
    """make_cluster(**options) -> a MistudioCluster, observed by this process; torn down after the test."""
    made: list[MistudioCluster] = []
    observing = []

    def make(**options) -> MistudioCluster:
        cluster = MistudioCluster(tmp_path / f"cluster{len(made)}", **options)
        made.append(cluster)
        context = cluster.observing()
        context.__enter__()
        observing.append(context)
        return cluster

    try:
        yield make
        for cluster in made:  # everything miStudio did, on every host, was allowed to the app user
            refused = cluster.acl_refusals()
            assert not refused, f"the cluster's Redis refused the app user: {refused}"
    finally:
        for context in reversed(observing):
            context.__exit__(None, None, None)
        for cluster in made:
            if getattr(request.node, "cluster_failed", False):
                _print_logs(cluster)
            cluster.close()
