"""Two listener shards as `make run` runs them (LISTENER_SHARDS=2: two `flask listener`
processes), on one Redis and with the data plane on a real Redis Cluster: each Binance
connection carries its shard's streams only, alerts of both shards fire once, and killing
one shard's process leaves the other's connection alone while the watchdog brings it back."""

import os
import signal

import pytest

from devtools.fakefeed import FakeFeed
from tests.cluster import start_or_skip
from tests.product import Product, until
from webapp import keys
from worker.listener import shards
from worker.listener.subscriptions import streams_for

COINS = [f"SH{n}USDT" for n in range(40)]


def of_shard(shard, n=2, prefix=""):
    return [s for s in (prefix + c for c in COINS) if shards.shard_of(s, 2) == shard][:n]


@pytest.fixture(scope="module", params=["one-redis", "cluster"])
def product(request, tmp_path_factory):
    cluster = None
    if request.param == "cluster":
        cluster = start_or_skip(tmp_path_factory.mktemp("cluster"))
    try:
        with FakeFeed() as feed:
            running = Product(tmp_path_factory.mktemp("shards"), feed,
                              env={"LISTENER_SHARDS": "2"}, cluster=cluster)
            running.start()
            yield running
            assert running.stop() == 0, running.output()
    finally:
        if cluster is not None:
            cluster.stop()


def holder_pid(r, shard):
    token = r.get(keys.listener_lease(shard))
    return token, int(token.rsplit(":", 2)[1]) if token else None


def streams_by_connection(feed):
    return sorted((frozenset(s) for s in feed.client_streams() if s), key=sorted)


def test_each_shard_carries_its_own_streams_and_alerts_fire_once(product):
    mine = {shard: of_shard(shard, prefix="A") for shard in (0, 1)}
    ids = [i for symbols in mine.values() for s in symbols for i in product.arm(2, s, 100)]
    wanted = sorted((frozenset(streams_for(mine[k])) for k in (0, 1)), key=sorted)
    assert product.feed.wait(lambda f: streams_by_connection(f) == wanted, 15), (
        product.feed.client_streams())
    for symbols in mine.values():
        for symbol in symbols:
            product.feed.trade(symbol, 101)
            product.feed.trade(symbol, 102)
    assert product.wait_fired(ids) == [1] * len(ids), product.output()
    health = product.health()
    assert health["status"] == "ok"
    assert [s["status"] for s in health["monitoring"]["shards"]] == ["ok", "ok"]


def test_killing_one_shard_moves_nothing_else_and_the_watchdog_brings_it_back(product):
    r, feed = product.redis, product.feed
    mine = {shard: of_shard(shard, prefix="K") for shard in (0, 1)}
    for symbols in mine.values():
        for symbol in symbols:
            product.arm(1, symbol, 1000)
    shard0 = r.hgetall(keys.listener_status(0))
    lease0, _ = holder_pid(r, 0)
    token1, pid1 = holder_pid(r, 1)
    total = feed.connections_total
    os.kill(pid1, signal.SIGKILL)  # a crash: its lease is left behind, its job "started"
    back = until(lambda: holder_pid(r, 1)[0] not in (None, token1)
                 and r.hget(keys.listener_status(1), "state") == "connected"
                 and feed.subscriptions() >= set(streams_for(mine[1])), 60)
    assert back, product.output()
    assert holder_pid(r, 0)[0] == lease0  # shard 0: same process, same connection
    after = r.hgetall(keys.listener_status(0))
    assert (after["connected_at"], after["connections"]) == (
        shard0["connected_at"], shard0["connections"])
    assert feed.connections_total == total + 1  # shard 1's new connection, nothing else
    fresh = {shard: product.arm(1, symbols[0], 2000) for shard, symbols in mine.items()}
    for symbols in mine.values():
        product.feed.trade(symbols[0], 2001)
    for armed in fresh.values():
        assert product.wait_fired(armed) == [1], product.output()
    assert until(lambda: product.health()["status"] == "ok", 30), product.output()
