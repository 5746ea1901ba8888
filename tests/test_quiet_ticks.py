"""A quiet price tick (nothing to fire or re-arm) records the market on the replicas but,
but for about one a second a symbol, not in the append-only file, so under `appendfsync
always` it waits for no disk; whatever fires still does, and a Redis restarted from its
file (killed or stopped) has each symbol's market as it was up to a second before and fires
nothing twice. Redis 6.2 writes an empty MULTI/EXEC for each such call: no gain there, so
these need Redis 7."""

import os
import signal
import time

import pytest
import redis

from devtools import redisd
from devtools.rediscluster import ClusterUnavailable, find_binary
from tests.test_tick_batches import arm
from webapp import keys
from worker.matcher import Matcher

T0 = int(time.time() * 1000)

try:
    find_binary()
except ClusterUnavailable as missing:
    pytestmark = pytest.mark.skip(reason=f"a quiet tick's writes: {missing}")


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
    folder = data_dir / "appendonlydir"
    newest = max(folder.glob("*.incr.aof"), key=lambda f: f.stat().st_mtime)
    appended = sum(f.stat().st_size for f in folder.glob("*.aof")) - since
    return newest.read_bytes()[newest.stat().st_size - appended:]


def test_quiet_ticks_wait_for_no_disk_but_once_a_second_and_a_firing_one_does(primary):
    _, url, _ = primary
    r = redis.Redis.from_url(url, decode_responses=True)
    arm(r, "BTCUSDT", "above", 100, mode="once")
    matcher = Matcher(r)
    assert matcher.on_price("BTCUSDT", 50, T0, 1) == []  # the second's first: written
    before = aof_size(r)
    for i in range(1, 50):  # the rest of that second
        assert matcher.on_price("BTCUSDT", 50 + i, T0 + i * 10, i + 1) == []
    assert aof_size(r) == before
    assert r.hget(keys.price("BTCUSDT"), "price") == "99"

    assert matcher.on_price("BTCUSDT", 60, T0 + 1000, 51) == []  # the next second's first
    written = aof_size(r)
    assert written > before
    assert len(matcher.on_price("BTCUSDT", 101, T0 + 1010, 52)) == 1
    assert aof_size(r) > written  # the notification is on disk before its answer


def test_quiet_ticks_reach_a_replica(primary, tmp_path):
    _, url, data_dir = primary
    r = redis.Redis.from_url(url, decode_responses=True)
    port = r.connection_pool.connection_kwargs["port"]
    replica_process, replica_url = redisd.start(tmp_path / "replica", port=redisd.free_port(),
                                                appendonly=False)
    try:
        replica = redis.Redis.from_url(replica_url, decode_responses=True)
        r.config_set("repl-diskless-sync-delay", 0)  # not Redis's 5 s of a 10 s deadline
        replica.replicaof("127.0.0.1", port)
        deadline = time.monotonic() + 10
        while replica.info("replication")["master_link_status"] != "up":
            assert time.monotonic() < deadline, "the replica never linked"
            time.sleep(0.05)
        arm(r, "BTCUSDT", "above", 100, mode="once")
        matcher = Matcher(r)
        matcher.on_price("BTCUSDT", 50, T0, 1)
        before = aof_size(r)
        for i in range(1, 50):
            assert matcher.on_price("BTCUSDT", 50 + i, T0 + i * 10, i + 1) == []
        r.wait(1, 5000)
        price = keys.price("BTCUSDT")
        assert replica.hget(price, "price") == "99"
        assert replica.hget(price, "mts") == str(T0 + 490)
        # Redis 7.0 still writes each call's empty MULTI/EXEC when a replica is linked
        assert price.encode() not in aof_tail(data_dir, before)
    finally:
        redisd.stop(replica_process)


@pytest.mark.parametrize("how", ["killed", "stopped"])
def test_a_redis_restarted_from_its_file_has_the_market_a_second_old_and_every_firing(
        primary, how):
    process, url, data_dir = primary
    r = redis.Redis.from_url(url, decode_responses=True)
    arm(r, "BTCUSDT", "above", 100, mode="once")
    arm(r, "BTCUSDT", "below", 40)  # recurring
    matcher = Matcher(r)
    assert len(matcher.on_price("BTCUSDT", 101, T0, 1)) == 1  # fires the one-shot
    assert len(matcher.on_price("BTCUSDT", 39, T0 + 1, 2)) == 1  # fires the recurring one
    for i in range(20):  # quiet: the recurring alert waits to re-arm above 41
        assert matcher.on_price("BTCUSDT", 39.5 - i / 100, T0 + 2 + i * 40, 3 + i) == []
    # a second on: the tick that publishes (a sparkline sample) is written, those after not
    assert matcher.on_price("BTCUSDT", 39.4, T0 + 1000, 23) == []
    assert matcher.on_price("BTCUSDT", 39.3, T0 + 1100, 24) == []
    spark = r.llen(keys.spark("BTCUSDT"))

    if how == "killed":
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    else:
        redisd.stop(process)
    process, url = redisd.start(data_dir, port=r.connection_pool.connection_kwargs["port"],
                                appendonly=True)
    try:
        r = redis.Redis.from_url(url, decode_responses=True)
        price = r.hgetall(keys.price("BTCUSDT"))
        assert (price["price"], price["mts"]) == ("39.4", str(T0 + 1000))
        assert r.llen(keys.spark("BTCUSDT")) == spark
        assert r.xlen(keys.replay(7)) == 2
        matcher = Matcher(r)
        assert matcher.on_price("BTCUSDT", 150, T0 + 2000, 100) == []  # re-arms the recurring
        assert r.xlen(keys.replay(7)) == 2
        assert len(matcher.on_price("BTCUSDT", 30, T0 + 2001, 101)) == 1
        assert r.xlen(keys.replay(7)) == 3
    finally:
        redisd.stop(process)
