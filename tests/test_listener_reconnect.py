"""Never deaf: a working connection that drops reconnects at once; failures back off, in budget."""

import bisect
import logging
import threading

import pytest

from tests.test_listener import Clock, eventually
from webapp import keys
from webapp.alerts import index as alert_index
from webapp.core.breaker import Breaker
from webapp.keys import SYMBOLS as SYMBOLS_KEY
from webapp.models import Alert
from worker.listener.connection import Listener
from worker.listener.pacing import AttemptBudget, Backoff
from worker.listener.pool import ListenerPool
from worker.matcher import Matcher

BTC = {"btcusdt@aggTrade", "btcusdt@miniTicker"}
NEVER = 1e-9  # refill a second: a budget that does not come back within a test


class Counted:
    """The real matcher, counting the trades it has been given."""

    def __init__(self, matcher):
        self.matcher, self.trades = matcher, 0
        self.changed = threading.Condition()

    def on_price(self, symbol, price, ts_ms, seq=0):
        fired = self.matcher.on_price(symbol, price, ts_ms, seq)
        with self.changed:
            self.trades += 1
            self.changed.notify_all()
        return fired

    def on_volume(self, symbol, volume, ts_ms):
        return self.matcher.on_volume(symbol, volume, ts_ms)

    def wait_trades(self, n, timeout=5.0):
        with self.changed:
            return self.changed.wait_for(lambda: self.trades >= n, timeout)


@pytest.fixture
def events(caplog):
    caplog.set_level(logging.INFO, logger="worker.listener")
    return lambda name: [m for m in caplog.messages if m.startswith(f"event={name} ")]


@pytest.fixture
def run(feed):
    """Start a listener (or a pool) in a thread; each is stopped at the end of the test."""
    running = []

    def start(make, *args, **settings):
        settings = {"poll_s": 0.02, "heartbeat_s": 0.05, "recv_timeout_s": 0.02, **settings}
        started = make(*args, feed.url, **settings)
        thread = threading.Thread(target=started.run, daemon=True)
        thread.start()
        running.append((started, thread))
        return started

    yield start
    for started, thread in running:
        started.stop.set()
        thread.join(10)
        assert not thread.is_alive()


def arm(r, alert_id, target, symbol="BTCUSDT"):
    alert_index.index(Alert(id=alert_id, user_id=7, symbol=symbol, condition="above",
                            target=target, mode="once", buffer=0.5, buffer_is_pct=False,
                            expires_at=None, note="", active=True), r)


def test_twenty_drops_in_a_row_each_reconnect_at_once_and_an_alert_fires_after(r, feed, run,
                                                                              events):
    arm(r, 1, 100)
    handler = Counted(Matcher(r))
    run(Listener, r, handler, backoff=Backoff(30, 30))  # a backoff wait would outlast the test
    for n in range(1, 21):
        # before each drop the connection has worked (a trade came through); after it, a new
        # connection carries the streams before the next trade is sent
        assert feed.wait(lambda f, n=n: f.connections_total == n and f.subscriptions() == BTC)
        feed.trade("BTCUSDT", 99.0)
        assert handler.wait_trades(n)
        feed.drop_all(reset=n % 2 == 0)  # half of them a TCP reset, half a plain close
    assert feed.wait(lambda f: f.connections_total == 21 and f.subscriptions() == BTC)
    assert [e for e in events("reconnecting") if "in_s=0.00 attempt=0" not in e] == []
    assert len(events("reconnecting")) == 20
    feed.trade("BTCUSDT", 101.0)
    assert eventually(lambda: r.xlen(keys.replay(7)) == 1)


def test_a_server_that_drops_each_connection_at_once_is_backed_off_from(r, feed, run, events):
    r.hset(SYMBOLS_KEY, "BTCUSDT", 1)
    breaker = Breaker("binance", threshold=3, reset_timeout=0.2, redis=r)
    feed.flap()  # every handshake accepted, then the connection dropped before a frame
    listener = run(Listener, r, Counted(Matcher(r)), breaker=breaker,
                   backoff=Backoff(0.01, 0.16))
    assert eventually(lambda: len(events("reconnecting")) >= 5)
    attempts = [int(e.split("attempt=")[1].split()[0]) for e in events("reconnecting")[:5]]
    assert attempts == [1, 2, 3, 4, 5]  # each one counted as a failure, the backoff growing
    assert breaker.state()["state"] in ("open", "half-open")
    assert feed.wait(lambda f: f.connections_total == f.flapped_total >= 5)
    feed.accept()
    assert feed.wait(lambda f: f.connection_count == 1 and f.subscriptions() == BTC)
    feed.trade("BTCUSDT", 1.5)
    assert listener.handler.wait_trades(1)
    assert eventually(lambda: breaker.state()["state"] == "closed")
    assert listener.backoff.attempt == 0


def test_the_attempt_budget_caps_connection_attempts(r, feed, run, events):
    feed.refuse()
    run(Listener, r, Counted(Matcher(r)), backoff=Backoff(0.001, 0.002),
        attempts=AttemptBudget(burst=3, per_s=NEVER))
    assert eventually(lambda: events("connect_deferred"))
    assert feed.refused_total == 3
    assert "reason=attempt_budget" in events("connect_deferred")[0]


def test_a_pool_spends_one_attempt_budget_across_its_connections(r, feed, run, events):
    r.hset(SYMBOLS_KEY, mapping={f"C{n:02d}USDT": 1 for n in range(8)})
    pool = run(ListenerPool, r, Counted(Matcher(r)), max_streams=10,
               backoff=lambda: Backoff(0.001, 0.002),
               attempts=AttemptBudget(burst=5, per_s=NEVER))
    assert feed.wait(lambda f: f.connection_count == 2 and len(f.subscriptions()) == 16)
    feed.refuse()
    feed.drop_all()
    assert eventually(lambda: len(events("connect_deferred")) >= 2)  # both are waiting
    assert feed.connections_total + feed.refused_total == 5
    assert {c.listener.attempts for c in pool.conns} == {pool.attempts}


def test_attempt_budget_refills_and_never_passes_binance_limit():
    clock = Clock()
    budget = AttemptBudget(burst=3, per_s=1.0, clock=clock)
    assert [budget.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert budget.take() == pytest.approx(1.0)
    clock.now += 0.5
    assert budget.take() == pytest.approx(0.5)
    clock.now += 0.5
    assert budget.take() == 0.0
    # the defaults, taken as fast as they allow for a long while: never 300 in 5 minutes
    greedy, taken = AttemptBudget(clock=clock), []
    for _ in range(60_000):
        clock.now += 0.05
        if greedy.take() == 0.0:
            taken.append(clock.now)
    assert max(bisect.bisect_left(taken, t + 300) - i for i, t in enumerate(taken)) < 300



def test_a_connection_due_for_replacement_keeps_serving_until_an_attempt_is_spare(r, feed,
                                                                                  run):
    r.hset(SYMBOLS_KEY, "BTCUSDT", 1)
    handler = Counted(Matcher(r))
    budget = AttemptBudget(burst=1, per_s=NEVER)  # the first connection spends it
    listener = run(Listener, r, handler, max_age_s=0.05, attempts=budget)
    assert feed.wait(lambda f: f.subscriptions() == BTC)
    assert eventually(lambda: listener.replace_at - listener.opened_at > 1000)  # deferred
    feed.trade("BTCUSDT", 1.5)
    assert handler.wait_trades(1)  # still read, on the connection it had
    assert feed.connections_total == 1 and feed.connection_count == 1


def test_the_feeds_breaker_reads_the_same_everywhere_and_opens_for_seconds(r):
    """The listener's breaker opens for FEED_BREAKER_RESET_S (a 6 s outage cost 36 s under
    30 s), and /health, `flask status` and the metrics, each with a Breaker of their own,
    read it half-open when the listener does."""
    from worker.listener.hosting import FEED_BREAKER_RESET_S

    now = [1000.0]
    listener = Breaker("binance", threshold=1, reset_timeout=FEED_BREAKER_RESET_S, redis=r,
                       clock=lambda: now[0])
    reader = Breaker("binance", redis=r, clock=lambda: now[0])  # the default 30 s
    assert FEED_BREAKER_RESET_S <= 5 and listener.failure("refused")
    assert reader.state()["state"] == "open" and reader.retry_in() == FEED_BREAKER_RESET_S
    now[0] += FEED_BREAKER_RESET_S
    assert listener.allow() and reader.state()["state"] == "half-open"
    assert reader.retry_in() == 0.0


def test_a_feed_back_after_an_outage_is_tried_again_within_seconds(app):
    """Attempts wait at most LISTENER_BACKOFF_MAX_S (5 s) by default: at 30 s a 6 s outage
    could cost 36 s of market data; 300 attempts per 5 minutes are Binance's limit."""
    from worker.listener.pacing import Backoff

    backoff = Backoff(app.config["LISTENER_BACKOFF_BASE_S"], app.config["LISTENER_BACKOFF_MAX_S"])
    waits = [backoff.next() for _ in range(16)]  # a minute's outage
    assert max(waits) <= 5.0 and min(waits[6:]) >= 2.5  # spread, never hammering
    # a long one waits up to 30 s again: many connections failing for minutes, where the
    # shared budget cannot count them (Redis away), stay under the limit
    later = [backoff.next() for _ in range(20)]
    assert 15 <= min(later) and max(later) <= 30
    assert sum(waits) + sum(later) > 300 and len(waits + later) <= 40
