"""A process starting after every node REDIS_CLUSTER_NODES names has failed over: it finds the
cluster through the nodes seen last (kept on REDIS_URL), not a crash loop (a drill's
listener, restarted once both named masters were replicas elsewhere), and only if it is the
cluster they were seen in."""

import socket
import threading

import pytest
import redis

from tests.cluster import nodes_config
from webapp import keys
from webapp.extensions import data_redis, is_cluster


class Forwarder:
    """A loopback TCP port relaying to one node: a named node that can be taken away."""

    def __init__(self, host, port):
        self.target = (host, port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.open = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:  # closed: taken away
                return
            upstream = socket.create_connection(self.target)
            self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            dst.close()

    def close(self):
        self.server.close()
        for sock in self.open:
            sock.close()


@pytest.fixture
def named(redis_cluster):
    forwarder = Forwarder(*nodes_config(redis_cluster)[0])
    yield forwarder
    forwarder.close()


def test_a_process_finds_the_cluster_through_the_nodes_seen_last(named, redis_cluster, r,
                                                                redis_url):
    config = {"REDIS_CLUSTER_NODES": [("127.0.0.1", named.port)], "REDIS_URL": redis_url}
    seen = keys.cluster_seen(f"127.0.0.1:{named.port}")
    first = data_redis(config)
    assert is_cluster(first) and first.ping()
    ids = {address: node["node_id"] for address, node in first.cluster_nodes().items()}
    kept = dict(entry.split("=") for entry in r.get(seen).split(","))
    assert kept == ids and sorted(kept) == sorted(redis_cluster.nodes)
    assert 0 < r.ttl(seen) <= 30 * 24 * 3600
    first.close()

    named.close()  # the node named is gone; the cluster lives on
    later = data_redis(config)
    later.set("seen-probe", "here")
    assert later.get("seen-probe") == "here"
    later.delete("seen-probe")
    later.close()

    # the addresses seen now serve another cluster (reused IPs): its node ids are not those
    r.set(seen, ",".join(f"{address}={'f' * 40}" for address in ids))
    with pytest.raises(redis.ConnectionError,
                       match="no node answers, and those seen last serve another cluster now"):
        data_redis(config)

    r.delete(seen)  # nothing seen: unreachable, naming what was tried
    with pytest.raises(redis.ConnectionError, match=f"no node answers .127.0.0.1:{named.port}"):
        data_redis(config)
