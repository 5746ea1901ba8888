"""A symbol's last trade reaches the pages even when it came within a second of the one
shown, and the market then went quiet (worker/late_prices.py)."""

import json
import threading
import time

import pytest

from webapp import keys
from webapp.accounts import service as accounts
from webapp.alerts import service as alerts
from worker.late_prices import QUIET_S
from worker.listener.connection import Listener
from worker.listener.pacing import Backoff
from worker.matcher import Matcher

T0 = int(time.time() * 1000)


@pytest.fixture
def r(app):
    return app.extensions["redis"]


def prices(r, symbol):
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.ticks_channel(symbol))
    assert pubsub.get_message(timeout=1) is None  # the subscribe confirmation
    return pubsub


def shown(pubsub, timeout=0.3):
    """The prices published, until none comes for `timeout`."""
    got = []
    while (msg := pubsub.get_message(timeout=timeout)) is not None:
        got.append(json.loads(msg["data"])["price"])
    return got


def test_a_trade_held_back_by_the_once_a_second_rule_is_shown_once_trades_pause(r):
    matcher, pubsub = Matcher(r), prices(r, "BTCUSDT")
    matcher.on_price("BTCUSDT", 51000, T0, 1)
    matcher.on_price("BTCUSDT", 49000, T0 + 600, 2)  # within the second: recorded, not shown
    assert shown(pubsub) == [51000]
    assert matcher.late.publish(time.monotonic()) == 0  # not quiet for a second yet
    assert matcher.late.publish(time.monotonic() + QUIET_S + 1) == 1
    assert shown(pubsub) == [49000]
    assert json.loads(r.lrange(keys.spark("BTCUSDT"), -1, -1)[0]) == [T0 + 600, 49000]
    # shown once: another listener's ask, or this one's again, finds it shown
    other = Matcher(r)  # a second listener of the same trades asks too: Redis says shown
    other.on_price("BTCUSDT", 49000, T0 + 600, 2)
    assert other.late.publish(time.monotonic() + QUIET_S + 1) == 0
    matcher.on_price("BTCUSDT", 49500, T0 + 700, 3)
    matcher.on_price("BTCUSDT", 49600, T0 + 1700, 4)  # a second after the late one: shown
    assert shown(pubsub) == [49600]
    assert matcher.late.publish(time.monotonic() + 2 * QUIET_S + 1) == 0  # shown: nothing
    assert shown(pubsub) == []
    pubsub.close()


def test_a_listener_shows_the_last_trade_of_a_symbol_gone_quiet(app, r, feed):
    with app.app_context():  # an alert, so the listener follows the symbol
        uid = accounts.create_user("late@example.com", "long password").id
        alerts.create_alert(uid, {"symbol": "ETHUSDT", "type": "above", "price": 90000})
    pubsub = prices(r, "ETHUSDT")
    matcher = Matcher(r, late_prices=True)  # as the listener's host makes it
    listener = Listener(r, matcher, feed.url, poll_s=0.02, heartbeat_s=0.05,
                        recv_timeout_s=0.02, backoff=Backoff(0.01, 0.1))
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    try:
        assert feed.wait_for_subscription("ethusdt@aggTrade")
        now = int(time.time() * 1000)
        feed.trade("ETHUSDT", 3100, ts_ms=now)
        feed.trade("ETHUSDT", 3050, ts_ms=now + 600)
        assert shown(pubsub, timeout=QUIET_S + 1) == [3100, 3050]
        assert shown(pubsub, timeout=QUIET_S + 0.5) == []  # and once only
    finally:
        listener.stop.set()
        thread.join(5)
        matcher.close()
        pubsub.close()

