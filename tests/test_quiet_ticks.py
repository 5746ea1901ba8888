"""A quiet tick (nothing to fire or re-arm) records the market on the replicas but not in the
append-only file, so under `appendfsync always` it waits for no disk; whatever fires still
does, and a Redis killed and restarted from its file fires nothing twice."""

import os
import signal
import time

import pytest
import redis

from devtools import redisd
from tests.test_tick_batches import arm
from webapp import keys
from worker.matcher import Matcher

T0 = int(time.time() * 1000)


@pytest.fixture
def primary(tmp_path):
    """A redis-server as `make run` keeps it (append-only, fsync before each answer)."""
    process, url = redisd.start(tmp_path / "primary", port=redisd.free_port(),
                                appendonly=True)
    yield process, url, tmp_path / "primary"
    redisd.stop(process)


def aof_size(r):
    return r.info("persistence")["aof_current_size"]


def aof_tail(data_dir, since):
    """What the append-only file's newest increment holds past `since` bytes of the file."""
    newest = max((data_dir / "appendonlydir").glob("*.incr.aof"), key=lambda f: f.stat().st_mtime)
    base = sum(f.stat().st_size for f in (data_dir / "appendonlydir").glob("*.aof")) - since
    return newest.read_bytes()[newest.stat().st_size - base:]


def test_a_quiet_tick_writes_nothing_to_wait_for_and_a_firing_one_does(primary):
    _, url, _ = primary
    r = redis.Redis.from_url(url, decode_responses=True)
    arm(r, "BTCUSDT", "above", 100, mode="once")
    matcher = Matcher(r)
    before = aof_size(r)
    for i in range(50):
        assert matcher.on_price("BTCUSDT", 50 + i, T0 + i * 600, i + 1) == []
    assert aof_size(r) == before
    assert r.hget(keys.price("BTCUSDT"), "price") == "99"

    assert len(matcher.on_price("BTCUSDT", 101, T0 + 50 * 600, 51)) == 1
    assert aof_size(r) > before  # the notification is on disk before its answer


def test_quiet_ticks_reach_a_replica(primary, tmp_path):
    _, url, data_dir = primary
    r = redis.Redis.from_url(url, decode_responses=True)
    port = r.connection_pool.connection_kwargs["port"]
    replica_process, replica_url = redisd.start(tmp_path / "replica", port=redisd.free_port(),
                                                appendonly=False)
    try:
        replica = redis.Redis.from_url(replica_url, decode_responses=True)
        replica.replicaof("127.0.0.1", port)
        deadline = time.monotonic() + 10
        while replica.info("replication")["master_link_status"] != "up":
            assert time.monotonic() < deadline, "the replica never linked"
            time.sleep(0.05)
        arm(r, "BTCUSDT", "above", 100, mode="once")
        matcher = Matcher(r)
        before = aof_size(r)
        for i in range(50):
            assert matcher.on_price("BTCUSDT", 50 + i, T0 + i * 600, i + 1) == []
        r.wait(1, 5000)
        price = keys.price("BTCUSDT")
        assert replica.hget(price, "price") == "99"
        assert replica.hget(price, "mts") == str(T0 + 49 * 600)
        assert replica.llen(keys.spark("BTCUSDT")) == r.llen(keys.spark("BTCUSDT")) > 1
        # Redis 7.0 still writes each call's empty MULTI/EXEC when a replica is linked
        assert price.encode() not in aof_tail(data_dir, before)
    finally:
        redisd.stop(replica_process)


def test_a_redis_killed_after_quiet_ticks_restarts_with_every_firing_kept(primary):
    process, url, data_dir = primary
    r = redis.Redis.from_url(url, decode_responses=True)
    arm(r, "BTCUSDT", "above", 100, mode="once")
    arm(r, "BTCUSDT", "below", 40)  # recurring
    matcher = Matcher(r)
    assert len(matcher.on_price("BTCUSDT", 101, T0, 1)) == 1  # fires the one-shot
    assert len(matcher.on_price("BTCUSDT", 39, T0 + 1, 2)) == 1  # fires the recurring one
    for i in range(20):  # quiet: the recurring alert waits to re-arm above 41
        assert matcher.on_price("BTCUSDT", 39.5 - i / 100, T0 + 2 + i, 3 + i) == []

    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    process, url = redisd.start(data_dir, port=r.connection_pool.connection_kwargs["port"],
                                appendonly=True)
    try:
        r = redis.Redis.from_url(url, decode_responses=True)
        # the last ticks recorded are those that fired; the quiet ones after are gone
        assert r.hget(keys.price("BTCUSDT"), "price") == "39"
        assert r.xlen(keys.replay(7)) == 2
        matcher = Matcher(r)
        # a quiet tick older than the last lost ones is taken, and fires nothing again
        assert matcher.on_price("BTCUSDT", 39.4, T0 + 3, 4) == []
        assert matcher.on_price("BTCUSDT", 150, T0 + 100, 100) == []  # re-arms the recurring
        assert r.xlen(keys.replay(7)) == 2
        assert len(matcher.on_price("BTCUSDT", 30, T0 + 101, 101)) == 1
        assert r.xlen(keys.replay(7)) == 3
    finally:
        redisd.stop(process)
