import logging
import re
import threading
import time

import pytest

from devtools.fakefeed import FakeFeed
from webapp.core.breaker import Breaker
from webapp.keys import LISTENER as STATUS_KEY
from webapp.keys import SYMBOLS as SYMBOLS_KEY
from worker.listener.connection import Listener
from worker.listener.lag import Lag, status_field
from worker.listener.lease import Lease
from worker.listener.loglines import now_ms
from worker.listener.pacing import Backoff, MessageBudget
from worker.listener.subscriptions import Subscriptions, streams_for


class Recorder:
    """A handler that keeps every tick it is given."""

    def __init__(self):
        self.prices, self.volumes = [], []
        self.changed = threading.Condition()

    def on_price(self, symbol, price, ts_ms, seq=0):
        with self.changed:
            self.prices.append((symbol, price, ts_ms))
            self.changed.notify_all()
        return []

    def on_volume(self, symbol, volume, ts_ms):
        with self.changed:
            self.volumes.append((symbol, volume, ts_ms))
            self.changed.notify_all()
        return []

    def wait(self, predicate, timeout=5.0):
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self), timeout)


def eventually(predicate, timeout=5.0):
    """Poll `predicate` until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture
def events(caplog):
    """The listener's structured log lines, as (event, fields) pairs."""
    caplog.set_level(logging.INFO, logger="worker.listener")

    def read(name=None):
        found = []
        for record in caplog.records:
            fields = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', record.getMessage()))
            if "event" in fields and (name is None or fields["event"] == name):
                found.append(fields)
        return found

    return read


@pytest.fixture
def start(r, feed):
    """Start listeners in threads; every one is stopped at the end of the test."""
    running = []

    def start(handler=None, url=None, **settings):
        settings.setdefault("backoff", Backoff(0.01, 0.2))
        settings = {"poll_s": 0.02, "heartbeat_s": 0.05, "recv_timeout_s": 0.02, **settings}
        listener = Listener(r, handler or Recorder(), url or feed.url, **settings)
        thread = threading.Thread(target=listener.run, daemon=True)
        thread.start()
        running.append((listener, thread))
        return listener

    yield start
    for listener, thread in running:
        listener.stop.set()
        thread.join(5)
        assert not thread.is_alive()


def test_ticks_reach_the_handler_for_every_symbol_in_the_index(r, feed, start):
    r.hset(SYMBOLS_KEY, mapping={"BTCUSDT": 2, "ETHUSDT": 1})
    listener = start()
    assert feed.wait(lambda f: f.subscriptions() == {
        "btcusdt@aggTrade", "btcusdt@miniTicker", "ethusdt@aggTrade", "ethusdt@miniTicker"})
    feed.trade("BTCUSDT", 65010.5, ts_ms=1763700000123)
    feed.mini_ticker("ETHUSDT", close=3400.0, volume=1234.5, ts_ms=1763700000456)
    recorder = listener.handler
    assert recorder.wait(lambda h: h.prices and h.volumes)
    assert recorder.prices == [("BTCUSDT", 65010.5, 1763700000123)]
    assert recorder.volumes == [("ETHUSDT", 1234.5, 1763700000456)]
    assert feed.connections_total == 1


def test_a_new_symbol_is_subscribed_live_and_a_gone_one_unsubscribed(r, feed, start):
    r.hset(SYMBOLS_KEY, "BTCUSDT", 1)
    listener = start()
    assert feed.wait_for_subscription("btcusdt@aggTrade")
    r.hset(SYMBOLS_KEY, "SOLUSDT", 1)
    assert feed.wait_for_subscription("solusdt@aggTrade")
    assert feed.wait_for_subscription("solusdt@miniTicker")
    feed.trade("SOLUSDT", 171.25)
    assert listener.handler.wait(lambda h: h.prices)
    r.hdel(SYMBOLS_KEY, "BTCUSDT")
    assert feed.wait(lambda f: f.subscriptions() == {"solusdt@aggTrade", "solusdt@miniTicker"})
    assert feed.connections_total == 1  # all of it live, on the one connection
    methods = [msg["method"] for _, msg in feed.control_log]
    assert methods == ["SUBSCRIBE", "UNSUBSCRIBE"]


def test_fifty_symbols_at_once_stay_within_five_messages_a_second(r, feed, start):
    r.hset(SYMBOLS_KEY, "BTCUSDT", 1)
    start(batch=15)  # small batches, so pacing matters: 100 streams take 7 messages
    assert feed.wait_for_subscription("btcusdt@aggTrade")
    r.hset(SYMBOLS_KEY, mapping={f"COIN{i}USDT": 1 for i in range(50)})
    assert feed.wait(lambda f: len(f.subscriptions()) == 102, timeout=15)
    assert len(feed.control_log) == 7
    assert feed.violations == [] and feed.connections_total == 1


def test_streams_beyond_the_cap_are_left_out_and_logged(r, feed, start, events):
    r.hset(SYMBOLS_KEY, mapping={"AAAUSDT": 1, "BBBUSDT": 1, "CCCUSDT": 1})
    start(max_streams=4)
    assert feed.wait(lambda f: f.subscriptions() == {
        "aaausdt@aggTrade", "aaausdt@miniTicker", "bbbusdt@aggTrade", "bbbusdt@miniTicker"})
    assert eventually(lambda: events("stream_cap"))
    assert events("stream_cap")[0]["left_out"] == "2"


def test_connections_dropped_before_a_frame_are_backed_off_more_each_time(r, feed, start,
                                                                         events):
    r.hset(SYMBOLS_KEY, "BTCUSDT", 1)
    start(backoff=Backoff(0.01, 1.0))
    assert feed.wait_for_connections(1)
    for n in range(2, 6):
        feed.drop_all()  # nothing was received on it: it never worked
        assert feed.wait_for_connections(n)
    delays = [float(e["in_s"]) for e in events("reconnecting")]
    assert len(delays) == 4
    assert delays == sorted(delays) and delays[-1] > delays[0]
    assert feed.wait_for_subscription("btcusdt@aggTrade")  # streams come back each time


def test_breaker_opens_after_repeated_refusals_and_closes_on_recovery(r, feed, start, events,
                                                                      caplog):
    r.hset(SYMBOLS_KEY, "BTCUSDT", 1)
    breaker = Breaker("binance", threshold=3, reset_timeout=0.2, redis=r)
    feed.refuse()
    start(breaker=breaker)
    assert eventually(lambda: breaker.state()["state"] == "open")
    assert eventually(lambda: r.hget(STATUS_KEY, "state") == "backoff")
    assert "503" in r.hget(STATUS_KEY, "last_error")
    assert feed.refused_total >= 3 and feed.connections_total == 0
    feed.accept()
    assert feed.wait_for_subscription("btcusdt@aggTrade")
    assert breaker.state()["state"] != "closed"  # a handshake alone proves nothing yet
    feed.trade("BTCUSDT", 1.5)  # the first frame: the server serves us
    assert eventually(lambda: breaker.state()["state"] == "closed")
    assert events("breaker_opened") and eventually(lambda: events("breaker_closed"))
    assert eventually(lambda: r.hget(STATUS_KEY, "state") == "connected")
    # connected again: the status (and the ops page beside "connected") drops the old error
    assert eventually(lambda: not r.hget(STATUS_KEY, "last_error"))
    # an operator's alert on WARNING sees the trouble, and not the recovery
    levels = {}
    for record in caplog.records:
        event = re.match(r"event=(\w+)", record.getMessage())
        if event:
            levels.setdefault(event[1], set()).add(record.levelname)
    assert levels["breaker_opened"] == levels["reconnecting"] == {"WARNING"}
    assert levels["breaker_closed"] == levels["connected"] == {"INFO"}


def test_server_shutdown_reconnects_at_once(r, feed, start, events):
    r.hset(SYMBOLS_KEY, "BTCUSDT", 1)
    start(backoff=Backoff(30, 30))  # a backoff wait would outlast the test
    assert feed.wait_for_connections(1)
    feed.server_shutdown(close_after=None)  # the old connection stays up: we must leave
    assert feed.wait_for_connections(2)
    assert feed.wait(lambda f: f.connection_count == 1)
    assert feed.client_streams() == [{"btcusdt@aggTrade", "btcusdt@miniTicker"}]
    assert eventually(lambda: events("replaced"))
    assert events("replaced")[0]["reason"] == "server_shutdown"
    assert events("reconnecting") == []


def test_connection_is_replaced_before_the_24h_cut(r, feed, start, events):
    r.hset(SYMBOLS_KEY, "BTCUSDT", 1)
    start(max_age_s=0.2, backoff=Backoff(30, 30))
    assert feed.wait_for_connections(3)
    assert feed.wait(lambda f: f.connection_count == 1)
    assert eventually(lambda: len(events("replaced")) >= 2)
    assert {e["reason"] for e in events("replaced")} == {"max_age"}
    assert events("reconnecting") == []


def test_pings_are_answered(start):
    with FakeFeed(ping_interval=0.25, ping_timeout=0.5) as pinging:
        start(url=pinging.url)
        assert pinging.wait(lambda f: f.pongs >= 3)
        assert pinging.connections_total == 1  # never cut for a missing pong
        assert pinging.violations == []


def test_status_hash_tracks_the_connection_and_last_tick(r, feed, start):
    r.hset(SYMBOLS_KEY, "ETHUSDT", 1)
    start()
    assert feed.wait_for_subscription("ethusdt@aggTrade")
    feed.trade("ETHUSDT", 3400.0, ts_ms=1763700000999)
    assert eventually(lambda: r.hget(STATUS_KEY, "last_tick_ms") == "1763700000999")
    status = r.hgetall(STATUS_KEY)
    assert status["state"] == "connected" and status["streams"] == "2"
    assert int(status["connected_at"]) > 0 and int(status["heartbeat"]) > 0


def test_status_hash_tracks_how_late_ticks_are_matched(r, feed, start):
    """The lag is from a trade's time to its match, not the time since the last trade: on
    time, a few ms; a trade a minute late reads a minute, and stays the worst in view."""
    r.hset(SYMBOLS_KEY, "ETHUSDT", 1)
    start()
    assert feed.wait_for_subscription("ethusdt@aggTrade")
    feed.trade("ETHUSDT", 3399.0, ts_ms=now_ms())
    assert eventually(lambda: r.hget(STATUS_KEY, "lag_ms") not in (None, ""))
    assert int(r.hget(STATUS_KEY, "lag_ms")) < 60_000
    feed.trade("ETHUSDT", 3400.0, ts_ms=now_ms() - 60_000)
    assert eventually(lambda: int(r.hget(STATUS_KEY, "lag_ms") or 0) >= 60_000)
    on_time = now_ms()
    feed.trade("ETHUSDT", 3401.0, ts_ms=on_time)
    assert eventually(lambda: r.hget(STATUS_KEY, "last_tick_ms") == str(on_time))
    assert int(r.hget(STATUS_KEY, "lag_ms")) >= 60_000


def test_the_lag_is_the_worst_of_this_minute_and_the_last_then_none_when_quiet():
    now = [0.0]
    lag = Lag(window_s=60, clock=lambda: now[0])
    assert lag.worst_ms() is None
    lag.note(60_000)
    lag.note(5)
    assert lag.worst_ms() == 60_000
    now[0] = 61
    lag.note(3)
    assert lag.worst_ms() == 60_000  # the minute before is still in view
    now[0] = 122
    assert lag.worst_ms() == 3
    now[0] = 300  # two minutes and more with nothing matched
    assert lag.worst_ms() is None
    assert status_field([None, None]) == {"lag_ms": ""}
    assert status_field([None, 7, 3]) == {"lag_ms": 7}


def test_a_second_lease_holder_waits_until_the_first_lets_go(r, events):
    first, second = Lease(r, ttl_s=5), Lease(r, ttl_s=5)
    assert first.acquire()
    stop = threading.Event()
    waiter = threading.Thread(target=second.wait, args=(stop, 0.01))
    waiter.start()
    try:
        assert not second.acquire() and first.renew()
        first.release()
        waiter.join(5)
        assert second.holder() == second.token
        assert not first.renew()  # taken: the first must not carry on
    finally:
        stop.set()
        waiter.join(5)


def test_a_listener_that_loses_its_lease_stops(r, feed, start, events):
    lease = Lease(r, ttl_s=5)
    assert lease.acquire()
    listener = start(lease=lease)
    assert feed.wait_for_connections(1)
    r.set(lease.key, "someone-else")
    assert listener.stop.wait(5)
    assert events("lease_lost")[0]["holder"] == "someone-else"
    assert feed.wait(lambda f: f.connection_count == 0)


def test_a_stalled_connection_is_probed_then_given_up_and_a_live_quiet_one_kept(
        r, start, events):
    """A quiet server answers the listener's ping and is kept; one that stalls (TCP open,
    nothing read or sent) is given up after `silence_s`, not Binance's 65 s of old."""
    with FakeFeed(ping_interval=None) as quiet:
        start(url=quiet.url, probe_s=0.4, silence_s=1.5)
        assert quiet.wait_for_connections(1)
        # quiet as a market can be: six pings answered, over more than `silence_s`
        assert quiet.wait(lambda f: f.pings >= 6, 10)
        assert quiet.connections_total == 1 and events("disconnected") == []
        assert quiet.violations == []  # the pings kept within Binance's 5 messages a second
        assert quiet.stall() == 1
        assert quiet.wait_for_connections(2)
        assert events("disconnected")[0]["reason"].startswith('"silent')


def test_a_silent_connection_is_given_up(r, start, events):
    with FakeFeed(ping_interval=None) as quiet:
        start(url=quiet.url, silence_s=0.2)
        assert quiet.wait_for_connections(2)
        assert events("disconnected")[0]["reason"].startswith('"silent')


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_backoff_doubles_with_jitter_up_to_the_cap():
    backoff = Backoff(0.5, 4.0)
    delays = [backoff.next() for _ in range(6)]
    ceilings = [0.5, 1, 2, 4, 4, 4]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    backoff.reset()
    assert backoff.next() <= 0.5


def test_message_budget_is_a_sliding_window():
    clock = Clock()
    budget = MessageBudget(3, window=1.2, clock=clock)
    for _ in range(3):
        assert budget.available() > 0
        budget.spend()
    assert budget.available() == 0 and budget.ready_in() == pytest.approx(1.2)
    clock.now += 1.0
    assert budget.available() == 0 and budget.ready_in() == pytest.approx(0.2)
    clock.now += 0.3
    assert budget.available() == 3 and budget.ready_in() == 0.0


def test_subscriptions_unsubscribe_first_and_batch():
    subs = Subscriptions(max_streams=4, batch=2)
    assert subs.url_streams(streams_for({"AAAUSDT", "BBBUSDT"})) == [
        "aaausdt@aggTrade", "aaausdt@miniTicker", "bbbusdt@aggTrade", "bbbusdt@miniTicker"]
    assert subs.want(streams_for({"BBBUSDT", "CCCUSDT"}))
    first, second = subs.next_message(), subs.next_message()
    assert first["method"] == "UNSUBSCRIBE" and first["params"] == [
        "aaausdt@aggTrade", "aaausdt@miniTicker"]
    assert second["method"] == "SUBSCRIBE" and second["params"] == [
        "cccusdt@aggTrade", "cccusdt@miniTicker"]
    assert subs.next_message() is None and len(subs.current) == 4


def test_a_refused_subscription_is_retried_sooner_first_then_each_minute():
    clock, stream = Clock(), ["xyzusdt@aggTrade"]
    subs = Subscriptions(clock=clock)
    waits = []
    for _ in range(7):
        assert subs.want(stream)
        msg = subs.next_message()
        error = subs.on_reply({"code": 2, "msg": "Invalid request", "id": msg["id"]})
        assert "refused" in error and subs.current == set()
        waited = 0
        while not subs.want(stream):  # not asked again until its wait is over
            clock.now += 1
            waited += 1
        waits.append(waited)
    assert waits == [5, 10, 20, 40, 60, 60, 60]
    msg = subs.next_message()
    assert subs.on_reply({"result": None, "id": msg["id"]}) is None  # taken: counted afresh
    subs.want([])
    subs.next_message()
    subs.want(stream)
    msg = subs.next_message()
    subs.on_reply({"code": 2, "msg": "Invalid request", "id": msg["id"]})
    clock.now += 5
    assert subs.want(stream)
    subs.refusals[stream[0]] = 1100  # refused each minute for 18 hours: still a minute
    msg = subs.next_message()
    subs.on_reply({"code": 2, "msg": "Invalid request", "id": msg["id"]})
    assert subs.rejected[stream[0]] == clock.now + 60


def test_url_carries_only_what_fits():
    symbols = {f"S{i:05d}USDT" for i in range(400)}
    subs = Subscriptions()
    initial = subs.url_streams(streams_for(symbols))
    assert 0 < len(initial) < 800 and len("/".join(initial)) <= 3000
    assert subs.want(streams_for(symbols))
    assert len(subs.to_add) == 800 - len(initial)
