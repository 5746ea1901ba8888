"""Never blind: ticks that meet a Redis outage are held and applied when it is back, none twice.

Each test runs a redis-server of its own (append-only file on) to kill, restart or freeze.
"""

import json
import logging
import os
import signal
import threading
import time
from collections import Counter

import pytest
import redis

from devtools import redisd
from devtools.fakefeed import FakeFeed
from tests.test_listener import eventually
from webapp import keys
from webapp.alerts import index as alert_index
from webapp.core.breaker import Breaker
from webapp.models import Alert
from worker.listener.connection import Listener
from worker.listener.heldticks import HeldTicks
from worker.listener.pacing import Backoff
from worker.listener.pool import ListenerPool
from worker.matcher import Matcher

T0 = int(time.time() * 1000)
STORM = 2000  # the drill's size: one-shot alerts crossed by one trade
RECURRING, BELOW, FRESH = STORM + 1, STORM + 2, STORM + 3
BTC = {"btcusdt@aggTrade", "btcusdt@miniTicker"}


class OwnRedis:
    """A redis-server to kill, restart at the same address with its AOF, or freeze."""

    def __init__(self, path):
        self.path = path
        self.process, self.url = redisd.start(path, appendonly=True)

    def client(self, timeout_s=0.5):
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=timeout_s,
                                    socket_connect_timeout=timeout_s)

    def kill(self):
        self.process.kill()
        self.process.wait()
        self.process.stderr.close()

    def restart(self):
        self.process, _ = redisd.start(self.path, appendonly=True)  # its socket: same url

    def freeze(self):
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self):
        os.kill(self.process.pid, signal.SIGCONT)

    def close(self):
        if self.process.poll() is None:
            self.thaw()
        redisd.stop(self.process)


@pytest.fixture
def own_redis(tmp_path):
    server = OwnRedis(tmp_path / "redis")
    yield server
    server.close()


@pytest.fixture
def events(caplog):
    caplog.set_level(logging.INFO, logger="worker.listener")
    return lambda name: [m for m in caplog.messages if m.startswith(f"event={name} ")]


@pytest.fixture
def feeds():
    """Start fake feeds; they stop after the listeners (a fixture asked for later)."""
    started = []

    def start(**settings):
        started.append(FakeFeed(**settings).start())
        return started[-1]

    yield start
    for feed in started:
        feed.stop()
        assert feed.violations == []


@pytest.fixture
def run():
    running = []

    def start(started):
        thread = threading.Thread(target=started.run, daemon=True)
        thread.start()
        running.append((started, thread))
        return started

    yield start
    for started, thread in running:
        started.stop.set()
        thread.join(10)
        assert not thread.is_alive()


SETTINGS = {"poll_s": 0.02, "heartbeat_s": 0.05, "recv_timeout_s": 0.02}


def arm(r, alert_id, condition="above", target=100.0, mode="once", buffer=0.5):
    alert_index.index(Alert(id=alert_id, user_id=7, symbol="BTCUSDT", condition=condition,
                            target=target, mode=mode, buffer=buffer, buffer_is_pct=False,
                            expires_at=None, note="", active=True), r)


def arm_the_drill(r):
    """STORM one-shot alerts above 100, one recurring above 100 (buffer 1), one below 98.5."""
    for alert_id in range(1, STORM + 1):
        arm(r, alert_id)
    arm(r, RECURRING, mode="recurring", buffer=1.0)
    arm(r, BELOW, condition="below", target=98.5)


def notified(r):
    """Notifications per alert id, from the user's replay log."""
    return Counter(int(json.loads(f["data"])["alert_id"]) for _, f in r.xrange(keys.replay(7)))


def every_crossing_once(r):
    return notified(r) == Counter(dict.fromkeys([*range(1, STORM + 1), RECURRING, BELOW], 1))


def trade_recorded(r, price):
    return eventually(lambda: r.hget(keys.price("BTCUSDT"), "price") == price)


def fresh_alert_fires(r, feed):
    """A new alert fires; the recurring one, re-armed at 98 during the outage, fires again."""
    arm(r, FRESH)
    feed.trade("BTCUSDT", 100.5)
    return eventually(lambda: notified(r)[FRESH] == 1 and notified(r)[RECURRING] == 2)


def test_a_redis_restart_loses_no_crossing_and_fires_none_twice(own_redis, feeds, run, events):
    r, feed = own_redis.client(), feeds()
    arm_the_drill(r)
    breaker = Breaker("binance", redis=own_redis.client())
    listener = run(Listener(own_redis.client(), Matcher(own_redis.client()), feed.url,
                            breaker=breaker, backoff=Backoff(30, 30), **SETTINGS))
    assert feed.wait(lambda f: f.subscriptions() == BTC)
    feed.trade("BTCUSDT", 99.5)
    assert trade_recorded(r, "99.5")
    own_redis.kill()
    feed.drop_all()  # and the feed drops meanwhile: back at once, on the streams it had
    assert feed.wait(lambda f: f.connections_total == 2 and f.subscriptions() == BTC)
    feed.trade("BTCUSDT", 101)  # a crossing that reverses before Redis is back
    sent_ms = time.time() * 1000
    for price in (98, 99.8):
        feed.trade("BTCUSDT", price)
    assert eventually(lambda: listener.held.count == 3)
    time.sleep(0.5)  # the outage lasts: its ticks wait
    restarted_ms = time.time() * 1000
    own_redis.restart()
    assert eventually(lambda: not listener.gate.down, timeout=10)
    assert every_crossing_once(r), notified(r).most_common(3)
    # matched late by the outage at least, which the status's lag says (a floor, not a timing)
    assert eventually(lambda: int(r.hget(keys.LISTENER, "lag_ms") or 0)
                      >= restarted_ms - sent_ms >= 500)
    assert fresh_alert_fires(r, feed)
    assert len(events("redis_down")) == len(events("redis_back")) == 1
    assert "ticks_held=3 applied=3" in events("redis_back")[0]


def test_a_frozen_redis_loses_no_crossing_and_the_socket_keeps_being_read(own_redis, feeds,
                                                                         run, events):
    r, feed = own_redis.client(), feeds(ping_interval=0.3, ping_timeout=2.0)
    arm_the_drill(r)
    client = own_redis.client()
    # the pool, as hosted; batches of 500 so the frozen call leaves work for its retry
    pool = run(ListenerPool(client, Matcher(client, batch=500), feed.url, **SETTINGS))
    assert feed.wait(lambda f: f.subscriptions() == BTC)
    feed.trade("BTCUSDT", 99.5)
    assert trade_recorded(r, "99.5")
    listener = pool.conns[0].listener
    own_redis.freeze()
    try:
        feed.trade("BTCUSDT", 101)  # its call times out: it may run when Redis thaws
        sent_ms = time.time() * 1000
        assert eventually(lambda: listener.held.count == 1)
        feed.trade("BTCUSDT", 98)
        feed.trade("BTCUSDT", 99.8)
        assert eventually(lambda: listener.held.count == 3)
        pongs = feed.pongs
        assert feed.wait(lambda f: f.pongs >= pongs + 4, timeout=10)  # pings still answered
    finally:
        thawed_ms = time.time() * 1000
        own_redis.thaw()
    assert eventually(lambda: not listener.gate.down, timeout=10)
    assert every_crossing_once(r), notified(r).most_common(3)
    assert fresh_alert_fires(r, feed)
    assert feed.connections_total == 1
    # the pool's status says how late the frozen ticks were matched (a floor, not a timing)
    assert eventually(lambda: int(r.hget(keys.LISTENER, "lag_ms") or 0) >= thawed_ms - sent_ms)
    # one line each way from the connection, and one each way from the pool's status
    assert len(events("redis_down")) == len(events("redis_back")) == 2


def test_a_tick_whose_reply_was_lost_finishes_its_batches_on_retry(own_redis):
    r = own_redis.client()
    for alert_id in range(1, 6):
        arm(r, alert_id)
    matcher = Matcher(own_redis.client(timeout_s=0.2), batch=2)
    matcher.on_price("ETHUSDT", 1, T0)  # loads the script: a frozen EVALSHA must find it
    own_redis.freeze()
    try:
        with pytest.raises(redis.TimeoutError):
            matcher.on_price("BTCUSDT", 101, T0, seq=1)
    finally:
        own_redis.thaw()
    assert trade_recorded(r, "101")  # it ran once Redis thawed: one batch, the reply lost
    assert sum(notified(r).values()) == 2
    assert len(matcher.on_price("BTCUSDT", 101, T0, seq=1)) == 3  # the rest, not dropped
    assert matcher.on_price("BTCUSDT", 101, T0, seq=1) == []  # a replay is dropped again
    assert notified(r) == Counter(dict.fromkeys(range(1, 6), 1))


def applied_by(held):
    ticks = []
    held.flush(lambda *tick: ticks.append(tick))
    return ticks


def test_held_ticks_are_the_low_high_and_last_of_each_stream_in_time_order():
    held = HeldTicks()
    for i, price in enumerate([100, 101.5, 98, 100.8, 98, 99.9]):
        held.add("price", "BTCUSDT", price, T0 + i, i + 1)
    held.add("volume", "BTCUSDT", 5000.0, T0, 0)
    assert held.count == 7 and len(held) == 4
    assert applied_by(held) == [
        ("price", "BTCUSDT", 101.5, T0 + 1, 2),
        ("price", "BTCUSDT", 98, T0 + 2, 3),  # the earlier of two equal lows
        ("price", "BTCUSDT", 99.9, T0 + 5, 6),
        ("volume", "BTCUSDT", 5000.0, T0, 0),
    ]
    assert len(held) == 0 and held.count == 0


def test_ticks_a_failed_flush_did_not_apply_stay_held_and_new_ones_join_them():
    held = HeldTicks()
    for i, price in enumerate([101, 98, 99]):
        held.add("price", "BTCUSDT", price, T0 + i, i + 1)
    applied = []

    def apply(*tick):
        if applied:
            raise redis.ConnectionError("Redis went away again")
        applied.append(tick[2])

    with pytest.raises(redis.ConnectionError):
        held.flush(apply)
    assert applied == [101] and len(held) == 2
    held.add("price", "BTCUSDT", 97, T0 + 3, 4)  # the new low and last; 98 is neither now
    assert [tick[2] for tick in applied_by(held)] == [99, 97]
