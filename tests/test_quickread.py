"""The data plane's connections answer "anything to read?" from the kernel, with redis-py's
meaning: nothing waits, a reply waits, the server hung up (then the pool connects again)."""

import os
import resource
import socket
import time

import pytest
import redis
from redis._parsers import hiredis as hiredis_parser

from tests.cluster import connect, data_plane
from webapp.core.quickread import QuickParser
from webapp.extensions import data_redis


@pytest.fixture
def client(redis_url):
    client = data_redis({"REDIS_URL": redis_url}, max_connections=2)
    yield client
    client.close()


def checked_out(client):
    pool = client.connection_pool
    connection = pool.get_connection()
    assert isinstance(connection._parser, QuickParser)
    return pool, connection


def until(check, seconds=3):
    """check()'s first truthy answer within the time, else its last."""
    deadline = time.monotonic() + seconds
    while not (answer := check()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return answer


def test_an_idle_connection_is_answered_without_redis_pys_own_check(client, monkeypatch):
    """The fast path is taken: redis-py's gevent-bound poll is never reached when idle."""
    def refused(*_):
        raise AssertionError("redis-py's readiness poll was used")

    monkeypatch.setattr(hiredis_parser, "_socket_can_read", refused)
    pool, connection = checked_out(client)
    try:
        assert connection.can_read(timeout=0) is False
        assert client.ping() and client.echo("fast") == "fast"
    finally:
        pool.release(connection)


def test_an_idle_connection_has_nothing_to_read_and_a_sent_command_has(client):
    pool, connection = checked_out(client)
    try:
        assert connection.can_read(timeout=0) is False
        connection.send_command("PING")
        assert until(lambda: connection.can_read(timeout=0))
        assert connection.read_response() == "PONG"
        assert connection.can_read(timeout=0) is False
        connection.send_command("ECHO", "x" * 200_000)  # larger than one read: the rest waits
        assert until(lambda: connection.can_read(timeout=0))
        assert connection.read_response() == "x" * 200_000
        assert connection.can_read(timeout=0) is False
    finally:
        pool.release(connection)


def test_a_reply_left_unread_or_a_hang_up_makes_the_pool_connect_again(client, r):
    pool, connection = checked_out(client)
    connection.send_command("PING")  # handed back with its reply unread
    assert until(lambda: connection.can_read(timeout=0))
    pool.release(connection)
    assert client.get("missing") is None  # not "PONG": the pool connected afresh
    client.client_setname("quickread")
    r.client_kill_filter(_type="normal", skipme=True)
    assert until(lambda: not [c for c in r.client_list() if c["name"] == "quickread"])
    assert client.set("back", "1") and r.get("back") == "1"


def test_a_timeout_waits_as_redis_py_does(client):
    pool, connection = checked_out(client)
    try:
        started = time.monotonic()
        assert connection.can_read(timeout=0.2) is False
        assert time.monotonic() - started >= 0.15
    finally:
        pool.release(connection)


def test_a_connection_past_descriptor_1023_is_read(redis_url):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1300:
        pytest.skip("this machine allows fewer than 1300 descriptors")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1300), hard))
    taken, client = [], data_redis({"REDIS_URL": redis_url}, max_connections=1)
    try:
        taken += (os.open(os.devnull, os.O_RDONLY) for _ in range(1100))
        assert client.ping()
        pool, connection = checked_out(client)
        assert connection._sock.fileno() > 1023
        assert connection.can_read(timeout=0) is False
        pool.release(connection)
        assert client.echo("far") == "far"
    finally:
        client.close()
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_pub_sub_reads_without_waiting(client, r):
    pubsub = client.pubsub()
    try:
        pubsub.subscribe("quick")
        assert until(lambda: pubsub.get_message(timeout=0))["type"] == "subscribe"
        assert pubsub.get_message(timeout=0) is None
        r.publish("quick", "hello")
        assert until(lambda: pubsub.get_message(timeout=0))["data"] == "hello"
    finally:
        pubsub.close()


def test_a_socket_closed_under_it_reads_as_ready():
    """The kernel reports a hung-up peer as readable: redis-py's check then decides."""
    from webapp.core.quickread import socket_readable

    left, right = socket.socketpair()
    try:
        assert socket_readable(left) is False
        right.close()
        assert socket_readable(left) is True
    finally:
        left.close()


def test_without_data_or_socket_the_parser_is_redis_pys(client):
    pool, connection = checked_out(client)
    connection.disconnect()
    with pytest.raises(redis.ConnectionError):
        connection._parser.can_read(timeout=0)
    pool.release(connection)
    assert client.ping()


def test_a_cluster_s_node_pools_block_and_read_quickly(redis_cluster):
    """Each node's pool is the one data_redis names: blocking, with QuickParser."""
    client = data_plane(redis_cluster)
    try:
        client.set("{quick}k", "v")
        assert client.get("{quick}k") == "v"
        nodes = client.get_nodes()
        assert {n.name for n in nodes} == {n.name for n in connect(redis_cluster).get_nodes()}
        assert len(client.get_primaries()) == 3
        for node in nodes:
            pool = node.redis_connection.connection_pool
            assert isinstance(pool, redis.BlockingConnectionPool)
            assert pool.connection_kwargs["parser_class"] is QuickParser
        node = client.get_node_from_key("{quick}k")
        connection = node.redis_connection.connection_pool.get_connection()
        try:
            assert isinstance(connection._parser, QuickParser)
            assert connection.can_read(timeout=0) is False
        finally:
            node.redis_connection.connection_pool.release(connection)
    finally:
        client.close()


def test_closing_a_cluster_client_closes_its_nodes_sockets(redis_cluster):
    """redis-py's node clients never close a pool handed to them: DataCluster does."""
    client = data_plane(redis_cluster)
    client.ping(target_nodes=client.ALL_NODES)
    connections = [c for n in client.get_nodes()
                   for c in n.redis_connection.connection_pool._connections]
    assert len(connections) >= 3 and all(c._sock is not None for c in connections)
    client.close()
    assert all(c._sock is None for c in connections)
