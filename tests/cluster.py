"""A real Redis Cluster on loopback (six redis-server processes) for the cluster tests."""

import pytest

from devtools import rediscluster


def start_or_skip(base_dir):
    """Start a cluster under `base_dir`, or skip loudly naming what is missing."""
    try:
        return rediscluster.start(base_dir)
    except rediscluster.ClusterUnavailable as missing:
        pytest.skip(f"!! Redis Cluster tests SKIPPED: {missing}")


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """One cluster for the session: three masters, one replica each. Keep it whole."""
    cluster = start_or_skip(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def doomed_cluster(tmp_path):
    """A cluster of the test's own, for drills that kill nodes."""
    cluster = start_or_skip(tmp_path / "cluster")
    yield cluster
    cluster.stop()
