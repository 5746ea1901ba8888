"""From the fake Binance feed through the listener and the matcher to the user's channel."""

import json
import threading
import time

import pytest

from tests.test_listener import eventually
from webapp import keys
from webapp.accounts import service as accounts
from webapp.alerts import service as alerts
from webapp.live.fanout import Message
from worker.listener.connection import Listener
from worker.listener.pacing import Backoff
from worker.matcher import Matcher


class Tap:
    """The real matcher, counting the ticks it has handled."""

    def __init__(self, matcher):
        self.matcher, self.ticks = matcher, 0
        self.changed = threading.Condition()
        self.gate = threading.Event()  # cleared, it holds ticks back: a lagging listener
        self.gate.set()

    def on_price(self, symbol, price, ts_ms, seq=0):
        assert self.gate.wait(10)
        fired = self.matcher.on_price(symbol, price, ts_ms, seq)
        with self.changed:
            self.ticks += 1
            self.changed.notify_all()
        return fired

    def on_volume(self, symbol, volume, ts_ms):
        return self.matcher.on_volume(symbol, volume, ts_ms)

    def wait_ticks(self, n, timeout=5.0):
        with self.changed:
            return self.changed.wait_for(lambda: self.ticks >= n, timeout)


@pytest.fixture
def r(app):
    return app.extensions["redis"]


@pytest.fixture
def listen(r, feed):
    running = []

    def start():
        tap = Tap(Matcher(r))
        listener = Listener(r, tap, feed.url, poll_s=0.02, heartbeat_s=0.05,
                            recv_timeout_s=0.02, backoff=Backoff(0.01, 0.1))
        thread = threading.Thread(target=listener.run, daemon=True)
        thread.start()
        running.append((listener, thread))
        return tap

    yield start
    for listener, thread in running:
        listener.stop.set()
        thread.join(5)


@pytest.fixture
def user(app):
    with app.app_context():
        return accounts.create_user("e2e@example.com", "long password").id


def create(app, uid, **data):
    with app.app_context():
        return alerts.create_alert(uid, data).id


def channel(r, uid):
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.user_channel(uid))
    assert pubsub.get_message(timeout=1) is None  # consumes the subscribe confirmation
    return pubsub


def next_message(pubsub, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=0.1)
        if msg is not None:  # as the hub reads it (a notification's id added)
            message = Message.parse(msg["data"])
            return {"id": message.id, "event": message.event, "data": message.data}
    return None


def test_a_tick_from_the_feed_publishes_a_notification(app, r, feed, listen, user):
    alert_id = create(app, user, symbol="BTCUSDT", type="above", price=65000)
    pubsub = channel(r, user)
    listen()
    assert feed.wait_for_subscription("btcusdt@aggTrade")
    traded_at = int(time.time() * 1000) + 60_000  # after the first trade's own time
    feed.trade("BTCUSDT", 64999.5)
    feed.trade("BTCUSDT", 65010.5, ts_ms=traded_at)
    msg = next_message(pubsub)
    assert msg["event"] == "notification"
    note = msg["data"]
    assert note["type"] == "PRICE_ALERT" and note["alert_id"] == str(alert_id)
    assert note["user_id"] == user and note["created_at"] == traded_at
    assert "65010.5" in note["message"] and "65000" in note["title"]
    assert r.xlen(keys.replay(user)) == 1
    pubsub.close()


def test_volume_alert_fires_from_the_mini_ticker(app, r, feed, listen, user):
    create(app, user, symbol="ETHUSDT", type="volume_above", price=1000)
    pubsub = channel(r, user)
    listen()
    assert feed.wait_for_subscription("ethusdt@miniTicker")
    feed.mini_ticker("ETHUSDT", close=3400, volume=1000.5)
    assert next_message(pubsub)["data"]["type"] == "VOLUME_ALERT"
    pubsub.close()


def test_an_alert_created_while_listening_is_subscribed_and_fires(app, r, feed, listen, user):
    listen()
    assert feed.wait_for_connections(1)
    pubsub = channel(r, user)
    create(app, user, symbol="SOLUSDT", type="below", price=170)
    assert feed.wait_for_subscription("solusdt@aggTrade")
    feed.trade("SOLUSDT", 169.5)
    assert next_message(pubsub)["data"]["data"]["symbol"] == "SOLUSDT"
    assert feed.connections_total == 1
    pubsub.close()


PATH = [65010, 65020, 64800, 65100, 63990]  # fire, hold, re-arm, fire, fire below


def two_listeners_on_path(app, r, feed, listen, user, lockstep):
    """Feed PATH to two listeners, in lockstep or with the second one lagging behind."""
    create(app, user, symbol="BTCUSDT", type="above", price=65000, mode="recurring",
           buffer=100)
    create(app, user, symbol="BTCUSDT", type="below", price=64000)
    pubsub = channel(r, user)
    taps = [listen(), listen()]
    assert feed.wait(lambda f: f.connection_count == 2 and all(
        "btcusdt@aggTrade" in s for s in f.client_streams()))
    if not lockstep:
        taps[1].gate.clear()
    for n, price in enumerate(PATH, start=1):
        feed.trade("BTCUSDT", price)
        if lockstep:
            assert all(tap.wait_ticks(n) for tap in taps)
    assert taps[0].wait_ticks(len(PATH))
    taps[1].gate.set()
    assert taps[1].wait_ticks(len(PATH))
    replay = [{**json.loads(f["data"]), "id": f"{eid}-{user}"}
              for eid, f in r.xrange(keys.replay(user))]
    published = [next_message(pubsub) for _ in replay]
    pubsub.close()
    return replay, published


def test_two_listeners_on_one_feed_give_one_notification_per_crossing(app, r, feed, listen,
                                                                     user):
    replay, published = two_listeners_on_path(app, r, feed, listen, user, lockstep=True)
    assert [n["data"]["price"] for n in replay] == [65010, 65100, 63990]
    assert [m["data"]["id"] for m in published] == [n["id"] for n in replay]


def test_two_skewed_listeners_give_one_notification_per_crossing(app, r, feed, listen, user):
    replay, _ = two_listeners_on_path(app, r, feed, listen, user, lockstep=False)
    assert [n["data"]["price"] for n in replay] == [65010, 65100, 63990]


def test_ticks_for_other_symbols_never_fire(app, r, feed, listen, user):
    create(app, user, symbol="BNBUSDT", type="above", price=600)
    create(app, user, symbol="ETHUSDT", type="above", price=10)
    tap = listen()
    assert feed.wait_for_subscription("bnbusdt@aggTrade")
    assert feed.wait_for_subscription("ethusdt@aggTrade")
    feed.trade("ETHUSDT", 5)  # below its own target; far above BNB's
    assert tap.wait_ticks(1)
    assert r.xlen(keys.replay(user)) == 0
    assert eventually(lambda: r.hget(keys.price("ETHUSDT"), "price") == "5")
