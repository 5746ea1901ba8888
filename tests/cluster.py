"""A real Redis Cluster on loopback (six redis-server processes) for the cluster tests."""

import pytest
from redis.cluster import ClusterNode, RedisCluster

from devtools import rediscluster
from webapp.extensions import data_redis


def start_or_skip(base_dir, **options):
    """Start a cluster under `base_dir`, or skip loudly naming what is missing."""
    try:
        return rediscluster.start(base_dir, **options)
    except rediscluster.ClusterUnavailable as missing:
        pytest.skip(f"!! Redis Cluster tests SKIPPED: {missing}")


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """One cluster for the session: three masters, one replica each. Keep it whole. A node
    starved for a second on a loaded machine is not taken for failed (the drills' clusters
    fail over within seconds: they kill nodes)."""
    cluster = start_or_skip(tmp_path_factory.mktemp("cluster"), node_timeout_ms=5000)
    yield cluster
    cluster.stop()


@pytest.fixture
def doomed_cluster(tmp_path):
    """A cluster of the test's own, for drills that kill nodes."""
    cluster = start_or_skip(tmp_path / "cluster")
    yield cluster
    cluster.stop()


def nodes_setting(cluster):
    """The cluster as REDIS_CLUSTER_NODES names it: host:port,host:port,..."""
    return ",".join(cluster.nodes)


def connect(cluster, **options):
    """A plain client of the cluster."""
    startup = [ClusterNode(*node.split(":")) for node in cluster.nodes]
    return RedisCluster(startup_nodes=startup, decode_responses=True, **options)


def nodes_config(cluster):
    """The cluster as the app's config holds REDIS_CLUSTER_NODES: [(host, port), ...]."""
    return [(host, int(port)) for host, port in (n.split(":") for n in cluster.nodes)]


def data_plane(cluster, **options):
    """The client the app makes for the cluster (webapp.extensions.data_redis)."""
    return data_redis({"REDIS_CLUSTER_NODES": nodes_config(cluster)}, **options)


@pytest.fixture
def rc(redis_cluster):
    """The app's client of the session's cluster, emptied first."""
    client = data_plane(redis_cluster)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def make_cluster_app(make_app, redis_cluster, rc):
    """make_app with the data plane on the session's cluster (emptied first); RQ stays on
    REDIS_URL, the session's single Redis, as in production."""

    def make(**config):
        return make_app(REDIS_CLUSTER_NODES=nodes_config(redis_cluster), **config)

    return make
