"""The listener pool: as many connections as the symbols need, none over its stream cap."""

import logging
import socket
import threading

import pytest

from devtools.fakefeed import FakeFeed
from tests.test_listener import Recorder, eventually
from webapp import clock
from webapp.core.breaker import Breaker
from webapp.keys import LISTENER as STATUS_KEY
from webapp.keys import SYMBOLS as SYMBOLS_KEY
from worker.listener.pacing import Backoff
from worker.listener.pool import ListenerPool, assign
from worker.listener.subscriptions import streams_for

CAP = 10  # streams a connection: 5 symbols


@pytest.fixture
def events(caplog):
    """The names of the structured events logged."""
    caplog.set_level(logging.INFO, logger="worker.listener")
    return lambda name: [m for m in caplog.messages if m.startswith(f"event={name} ")]


@pytest.fixture
def feed():
    with FakeFeed(max_streams=CAP) as f:  # the fake server enforces the small cap too
        yield f
    assert f.violations == [], "the pool broke Binance's limits"


@pytest.fixture
def pool(r, feed):
    running = []

    def start(**settings):
        settings = {"poll_s": 0.02, "heartbeat_s": 0.05, "recv_timeout_s": 0.02,
                    "backoff": lambda: Backoff(0.01, 0.2), "max_streams": CAP, **settings}
        started = ListenerPool(r, Recorder(), feed.url, **settings)
        thread = threading.Thread(target=started.run, daemon=True)
        thread.start()
        running.append((started, thread))
        return started

    yield start
    for started, thread in running:
        started.stop.set()
        thread.join(10)
        assert not thread.is_alive()


def coins(*numbers):
    return {f"C{n:02d}USDT" for n in numbers}


def within_cap_and_disjoint(feed):
    per_client = feed.client_streams()
    together = set().union(*per_client)
    return all(len(s) <= CAP for s in per_client) and len(together) == sum(map(len, per_client))


def test_symbols_beyond_one_connection_open_more_and_all_tick(r, feed, pool):
    symbols = coins(*range(12))
    r.hset(SYMBOLS_KEY, mapping=dict.fromkeys(symbols, 1))
    started = pool()
    assert feed.wait(lambda f: f.subscriptions() == set(streams_for(symbols)))
    assert feed.connection_count == 3 and within_cap_and_disjoint(feed)
    for symbol in symbols:
        feed.trade(symbol, 1.5)
    assert started.handler.wait(lambda h: {p[0] for p in h.prices} == symbols)
    assert len(started.handler.prices) == 12  # each on exactly one connection
    assert eventually(lambda: r.hget(STATUS_KEY, "state") == "connected")
    status = r.hgetall(STATUS_KEY)
    assert status["connections"] == "3" and status["streams"] == "24"
    # the worst of the connections' lags: one a minute behind shows
    feed.trade(sorted(symbols)[5], 1.6, ts_ms=clock.now_ms() - 60_000)
    assert eventually(lambda: int(r.hget(STATUS_KEY, "lag_ms") or 0) >= 60_000)


def test_a_full_connection_keeps_its_symbols_and_a_new_one_takes_the_rest(r, feed, pool):
    r.hset(SYMBOLS_KEY, mapping=dict.fromkeys(coins(1, 2, 3), 1))
    started = pool(batch=2)  # several SUBSCRIBEs on the first connection: its budget counts
    assert feed.wait(lambda f: f.subscriptions() == set(streams_for(coins(1, 2, 3))))
    r.hset(SYMBOLS_KEY, mapping=dict.fromkeys(coins(*range(4, 12)), 1))
    assert feed.wait(lambda f: f.subscriptions() == set(streams_for(coins(*range(1, 12)))))
    assert feed.connections_total == 3 and within_cap_and_disjoint(feed)
    first = [s for s in feed.client_streams() if "c01usdt@aggTrade" in s][0]
    assert first >= set(streams_for(coins(1, 2, 3))) and len(first) == CAP
    feed.trade("C11USDT", 2.5)
    assert started.handler.wait(lambda h: h.prices)


def test_removing_symbols_closes_an_empty_extra_connection(r, feed, pool, events):
    r.hset(SYMBOLS_KEY, mapping=dict.fromkeys(coins(*range(8)), 1))
    pool()
    assert feed.wait(lambda f: f.connection_count == 2 and len(f.subscriptions()) == 16)
    second = [s for s in feed.client_streams() if "c00usdt@aggTrade" not in s][0]
    gone = {stream.split("@")[0].upper() for stream in second}
    r.hdel(SYMBOLS_KEY, *gone)
    assert feed.wait(lambda f: f.connection_count == 1)
    assert feed.subscriptions() == set(streams_for(coins(*range(8)) - gone))
    assert feed.connections_total == 2  # the remaining one was never touched
    assert eventually(lambda: r.hget(STATUS_KEY, "connections") == "1")
    assert events("connection_closed")


def test_a_dropped_connection_reconnects_alone(r, feed, pool, events):
    symbols = coins(*range(8))
    r.hset(SYMBOLS_KEY, mapping=dict.fromkeys(symbols, 1))
    started = pool()
    assert feed.wait(lambda f: f.subscriptions() == set(streams_for(symbols)))
    kept, cut = (c.listener for c in started.conns)
    assert eventually(lambda: kept.state == cut.state == "connected")
    kept_opened = kept.opened_at
    cut.ws.sock.shutdown(socket.SHUT_RDWR)  # the link dies under the second connection
    assert feed.wait_for_connections(3)
    assert feed.wait(lambda f: f.connection_count == 2
                     and f.subscriptions() == set(streams_for(symbols)))
    assert kept.opened_at == kept_opened and len(events("reconnecting")) == 1
    assert within_cap_and_disjoint(feed)


def test_one_breaker_is_fed_by_every_connection(r, feed, pool):
    r.hset(SYMBOLS_KEY, mapping=dict.fromkeys(coins(*range(8)), 1))
    breaker = Breaker("binance", threshold=3, reset_timeout=0.2, redis=r)
    feed.refuse()
    pool(breaker=breaker)
    assert eventually(lambda: breaker.state()["state"] == "open")
    assert eventually(lambda: r.hget(STATUS_KEY, "state") == "backoff")
    assert r.hget(STATUS_KEY, "connections") == "0"  # open ones: none while refused
    assert "503" in r.hget(STATUS_KEY, "last_error")
    feed.accept()
    assert feed.wait(lambda f: f.connection_count == 2 and len(f.subscriptions()) == 16)
    assert eventually(lambda: r.hget(STATUS_KEY, "state") == "connected")
    assert r.hget(STATUS_KEY, "connections") == "2"
    assert r.hget(STATUS_KEY, "last_error") == ""  # not the refusal's, beside "connected"


def test_assign_is_stable_fills_the_first_with_room_and_opens_when_full():
    shares = assign([{"A", "B"}, {"C"}], {"A", "C", "D", "E", "F"}, per_connection=2)
    assert shares == [{"A", "D"}, {"C", "E"}, {"F"}]
    assert assign(shares, {"F"}, per_connection=2) == [set(), set(), {"F"}]
    assert assign([], set(), per_connection=2) == []
