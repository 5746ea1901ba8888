"""`python -m devtools.rediscluster`: a developer's cluster, its settings line, Ctrl-C."""

import selectors
import signal
import subprocess
import sys

import pytest
import redis

from devtools import rediscluster
from tests.cluster import connect
from webapp.config import ROOT

START_TIMEOUT_S = 60


def first_line(process, timeout):
    """The first stdout line of `process`, waiting at most `timeout` seconds for it."""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError(f"no line within {timeout} s")
    return process.stdout.readline().strip()


def test_the_command_prints_the_nodes_and_stops_the_cluster_on_ctrl_c(tmp_path):
    try:
        rediscluster.find_binary()
    except rediscluster.ClusterUnavailable as missing:
        pytest.skip(f"!! Redis Cluster tests SKIPPED: {missing}")
    with subprocess.Popen(
            [sys.executable, "-m", "devtools.rediscluster", "--dir", str(tmp_path)], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as process:
        try:
            line = first_line(process, START_TIMEOUT_S)
            name, _, nodes = line.partition("=")
            assert name == "REDIS_CLUSTER_NODES" and len(nodes.split(",")) == 6
            ports = {int(n.split(":")[1]): None for n in nodes.split(",")}
            with connect(rediscluster.Cluster(ports)) as client:
                assert client.set("tb:{42}:probe", "1") and client.get("tb:{42}:probe") == "1"
                assert len([n for n in client.get_nodes() if n.server_type == "primary"]) == 3
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(30) == 0
    port = int(nodes.split(",")[0].split(":")[1])
    with pytest.raises(redis.ConnectionError):
        redis.Redis("127.0.0.1", port, socket_connect_timeout=1).ping()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        n.split(":")[1] for n in nodes.split(","))
