"""Every alert kind live: alerts made through the JSON API, trades from the loopback Binance
feed through the real listener and matcher, notifications counted in the users' streams.

Trades are spaced in trade time (the `T` field), a second apart unless a test jumps. Two
listeners and edits while ticks flow, against a reference: test_alert_kinds_reference.py.
"""

import json
import math
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import pytest

from tests.test_listener import eventually
from webapp import keys
from worker.listener.connection import Listener
from worker.listener.pacing import Backoff
from worker.matcher import DEFAULT_BATCH, Matcher

STEP_MS = 1000
FAR = {"type": "above", "price": 10**9}  # never fires: keeps a symbol subscribed


class Counting:
    """The real matcher behind a listener, counting the ticks it has handled.

    Cleared, `gate` holds ticks back: a listener lagging behind the other.
    """

    def __init__(self, matcher):
        self.matcher, self.ticks = matcher, 0
        self.gate = threading.Event()
        self.gate.set()

    def on_price(self, symbol, price, ts_ms, seq=0):
        return self._count(self.matcher.on_price, symbol, price, ts_ms, seq)

    def on_volume(self, symbol, volume, ts_ms):
        return self._count(self.matcher.on_volume, symbol, volume, ts_ms)

    def _count(self, call, *args):
        assert self.gate.wait(10)
        try:
            return call(*args)
        finally:
            self.ticks += 1


class Market:
    """Trades and 24 h volumes sent through the feed, in trade time; remembered, so a
    reference matcher can be fed the same."""

    def __init__(self, feed, handlers):
        self.feed, self.handlers = feed, handlers
        self.at = int(time.time()) * 1000  # whole seconds: windows are per second
        self.start, self.sent, self.log = self.at, 0, []

    def trade(self, symbol, price, at=None, wait=True):
        """One trade, `STEP_MS` after the last unless given a time; returns its time."""
        self.at = at if at is not None else self.at + STEP_MS
        self.sent += self.feed.trade(symbol, price, ts_ms=self.at)
        self.log.append(("price", symbol, price, self.at))
        if wait:
            self.wait()
        return self.at

    def volume(self, symbol, volume, wait=True):
        self.at += STEP_MS
        self.sent += self.feed.mini_ticker(symbol, close=1, volume=volume, ts_ms=self.at)
        self.log.append(("volume", symbol, volume, self.at))
        if wait:
            self.wait()

    def wait(self):
        """Until every listener not held back has handled every tick the feed sent it."""
        share = self.sent / len(self.handlers)  # each listener here carries every symbol
        assert eventually(lambda: all(h.ticks >= share for h in self.handlers
                                      if h.gate.is_set()), 10)

    def replay(self, matcher):
        """The same ticks, straight into `matcher`."""
        for seq, (kind, symbol, value, at) in enumerate(self.log, start=1):
            if kind == "price":
                matcher.on_price(symbol, value, at, seq)
            else:
                matcher.on_volume(symbol, value, at)


@pytest.fixture
def listen(r, feed):
    yield from listening(r, feed)


def listening(r, feed):
    """The `listen` fixture: start listeners, each with its own Matcher; all stopped at the
    end of the test."""
    running = []

    def start(count=1, batch=DEFAULT_BATCH):
        handlers = []
        for _ in range(count):
            handler = Counting(Matcher(r, batch))
            listener = Listener(r, handler, feed.url, poll_s=0.02, heartbeat_s=0.05,
                                recv_timeout_s=0.02, backoff=Backoff(0.01, 0.1))
            thread = threading.Thread(target=listener.run, daemon=True)
            thread.start()
            running.append((listener, thread))
            handlers.append(handler)
        return Market(feed, handlers)

    yield start
    for listener, thread in running:
        listener.stop.set()
        thread.join(5)


@pytest.fixture
def user(auth):
    return auth.create()


@pytest.fixture
def create(client, auth, user):
    return creating(client, auth)


def creating(client, auth):
    """The `create` fixture: POST /api/v1/alerts on BTCUSDT unless told; returns the new
    alert's id."""
    headers = {"X-API-Key": auth.api_key()}

    def create(**body):
        response = client.post("/api/v1/alerts", json={"symbol": "BTCUSDT", **body},
                               headers=headers)
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    create.headers = headers
    return create


def subscribed(feed, symbols, listeners=1):
    streams = {f"{s.lower()}@aggTrade" for s in symbols}
    return feed.wait(lambda f: sum(streams <= s for s in f.client_streams()) >= listeners)


def fired(r, uid):
    """(alert id, trade ms) of every alert notification in the user's stream, in order
    (the stream holds others too, e.g. the security notice of a new API key)."""
    notes = (json.loads(f["data"]) for _, f in r.xrange(keys.replay(uid)))
    return [(int(n["alert_id"]), n["created_at"]) for n in notes if n.get("alert_id")]


def iso(ms):
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


# -- each kind, once, recurring, with a cooldown, with an expiry ---------------------------
# kind -> (API fields, price a, price b): the path alternates a, b, a, b... The first a
# places the alert; every b is a qualifying move (for `crossing`, every a after it too).
KINDS = {
    "crossing_up": ({"price": 100}, 99, 101),
    "crossing_down": ({"price": 100}, 101, 99),
    "crossing": ({"price": 100}, 99, 101),
    "pct_up": ({"pct": 5, "window": "1m"}, 100, 105.5),
    "pct_down": ({"pct": 5, "window": "1m"}, 100, 94.5),
    "channel_exit": ({"low": 100, "high": 110}, 105, 111),
    "channel_enter": ({"low": 100, "high": 110}, 111, 105),
}
BEFORE, AFTER = 6, 4  # trades before the jump in trade time, and after it
JUMP_MS = 60_000
COOLDOWN_S = 30


def expected(kind, mode, times, cooldown_ms=0, expires_at=math.inf):
    """Indexes of the trades that fire: qualifying moves, once if `once`, none within a
    cooldown of the last firing, none from the expiry on."""
    out = []
    for i, at in enumerate(times):
        qualifies = i % 2 == 1 or (kind == "crossing" and i > 0)
        if not qualifies or at >= expires_at:
            continue
        if out and (mode == "once" or at - times[out[-1]] < cooldown_ms):
            continue
        out.append(i)
    return out


@pytest.mark.parametrize("scenario", ["once", "recurring", "cooldown", "expiry"])
def test_each_kind_fires_once_per_qualifying_move(r, feed, listen, create, user, scenario):
    market = listen()
    mode = "once" if scenario == "once" else "recurring"
    extra = {"cooldown_s": COOLDOWN_S} if scenario == "cooldown" else {}
    expires_at = market.start + 20_000 if scenario == "expiry" else math.inf
    if scenario == "expiry":
        extra["expires_at"] = iso(expires_at)
    symbols = {kind: f"{kind.replace('_', '').upper()[:12]}USDT" for kind in KINDS}
    ids = {}
    for kind, (fields, _, _) in KINDS.items():
        ids[create(symbol=symbols[kind], type=kind, mode=mode, **fields, **extra)] = kind
        create(symbol=symbols[kind], **FAR)
    assert subscribed(feed, symbols.values())
    times = []
    for i in range(BEFORE + AFTER):
        at = market.at + (JUMP_MS if i == BEFORE else STEP_MS)
        for kind, (_, a, b) in KINDS.items():
            market.trade(symbols[kind], b if i % 2 else a, at=at, wait=False)
        times.append(at)
    market.wait()
    got = {kind: [] for kind in KINDS}
    for alert_id, at in fired(r, user):
        got[ids[alert_id]].append(times.index(at))
    cooldown_ms = extra.get("cooldown_s", 0) * 1000
    assert got == {k: expected(k, mode, times, cooldown_ms, expires_at) for k in KINDS}
    if scenario in ("once", "expiry"):  # gone from the index, as it fired or expired
        assert not any(r.hexists(keys.alerts("BTCUSDT"), alert_id) for alert_id in ids)


def test_the_model_of_what_fires_counts_cooldowns_and_expiry():
    times = [i * 1000 for i in range(BEFORE)] + [
        (BEFORE + i) * 1000 + JUMP_MS for i in range(AFTER)]
    assert expected("pct_up", "recurring", times) == [1, 3, 5, 7, 9]
    assert expected("pct_up", "recurring", times, COOLDOWN_S * 1000) == [1, 7]
    assert expected("crossing", "recurring", times, COOLDOWN_S * 1000) == [1, 6]
    assert expected("crossing", "once", times) == [1]
    assert expected("channel_exit", "recurring", times, 0, 20_000) == [1, 3, 5]


# -- edges ----------------------------------------------------------------------------------
def test_equal_prices_at_the_level_fire_once(r, feed, listen, create, user):
    market = listen()
    up = create(type="crossing_up", price=100, mode="recurring", buffer=0.01)
    above = create(type="above", price=100)
    channel = create(symbol="ETHUSDT", type="channel_exit", low=100, high=110,
                     mode="recurring")
    move = create(symbol="SOLUSDT", type="pct_up", pct=5, window="1m")
    assert subscribed(feed, ["BTCUSDT", "ETHUSDT", "SOLUSDT"])
    at = [market.trade("BTCUSDT", p) for p in (98, 100, 100, 100, 101, 100, 99.99, 100)]
    edge = [market.trade("ETHUSDT", p) for p in (100, 110, 100, 110.01, 109.99, 99.99)]
    market.trade("SOLUSDT", 100)
    exact = market.trade("SOLUSDT", 105)  # exactly 5 %
    assert Counter(fired(r, user)) == Counter({
        (up, at[1]): 1, (above, at[1]): 1, (up, at[7]): 1,
        (channel, edge[3]): 1, (channel, edge[5]): 1, (move, exact): 1})


def test_trades_in_one_millisecond_are_each_matched_once(r, feed, listen, create, user):
    market = listen()
    both = create(type="crossing", price=100, mode="recurring", buffer=0.5)
    assert subscribed(feed, ["BTCUSDT"])
    market.trade("BTCUSDT", 99)
    at = market.trade("BTCUSDT", 101)
    market.trade("BTCUSDT", 99, at=at)  # same ms, the next trade id: crosses back down
    market.trade("BTCUSDT", 99, at=at)
    assert fired(r, user) == [(both, at), (both, at)]


def test_a_gap_in_the_feed_is_no_move_but_a_jump_over_a_level_crosses(r, feed, listen,
                                                                      create, user):
    market = listen()
    up = create(type="pct_up", pct=5, window="1m", mode="recurring")
    down = create(type="pct_down", pct=5, window="5m", mode="recurring")
    cross = create(type="crossing_up", price=108)
    assert subscribed(feed, ["BTCUSDT"])
    market.trade("BTCUSDT", 100)
    market.trade("BTCUSDT", 101)
    feed.drop_all()  # the connection is lost; trade time jumps past both windows meanwhile
    assert feed.wait_for_connections(2) and subscribed(feed, ["BTCUSDT"])
    jumped = market.trade("BTCUSDT", 110, at=market.at + 10 * 60_000)
    assert fired(r, user) == [(cross, jumped)]  # the windows hold only this trade
    later = market.trade("BTCUSDT", 115.6)  # 5.09 % over 110, within the new 1 m window
    fallen = market.trade("BTCUSDT", 109.8)  # 5.02 % under 115.6
    assert fired(r, user)[1:] == [(up, later), (down, fallen)]


def test_a_thousand_alerts_of_every_kind_on_one_symbol_each_fire_once(r, feed, listen,
                                                                      create, user):
    market = listen(batch=4)  # more fire per tick than a batch: continuations too
    made = []
    for i in range(100):
        level, pct = 100 + i * 0.1, 1 + i * 0.1
        made += [
            create(type="above", price=level), create(type="crossing_up", price=level),
            create(type="crossing", price=level), create(type="pct_up", pct=pct, window="15m"),
            create(type="channel_exit", low=90 + i * 0.05, high=level + 0.5),
            create(type="channel_enter", low=110 + i * 0.1, high=115 + i * 0.1),
            create(type="below", price=90 - i * 0.1),
            create(type="crossing_down", price=90 - i * 0.1),
            create(type="pct_down", pct=pct, window="15m"),
            create(type="volume_above", price=1000 + i * 10),
        ]
    assert subscribed(feed, ["BTCUSDT"])
    for k in range(62):  # 99 up to 129.5, then down to 79.5
        market.trade("BTCUSDT", 99 + k * 0.5, wait=False)
    for k in range(1, 101):
        market.trade("BTCUSDT", 129.5 - k * 0.5, wait=False)
    market.volume("BTCUSDT", 1500, wait=False)
    market.volume("BTCUSDT", 5000)
    assert Counter(a for a, _ in fired(r, user)) == Counter(made)
    assert r.hlen(keys.alerts("BTCUSDT")) == 0 and r.hgetall(keys.kinds_in_use("BTCUSDT")) == {}


# -- found while writing these: each pins a case the matcher or index gets wrong -----------
def test_an_edit_before_the_slow_path_does_not_fire_a_one_shot_alert_again(client, r, feed,
                                                                          listen, create,
                                                                          user):
    market = listen()
    alert_id = create(type="above", price=100)
    create(**FAR)
    assert subscribed(feed, ["BTCUSDT"])
    first = market.trade("BTCUSDT", 101)
    assert fired(r, user) == [(alert_id, first)]
    # the slow path has not made it inactive in SQL yet; the user edits its note
    response = client.patch(f"/api/v1/alerts/{alert_id}", json={"note": "typo"},
                            headers=create.headers)
    assert response.status_code == 200
    market.trade("BTCUSDT", 102)  # still the same crossing
    assert fired(r, user) == [(alert_id, first)]


@pytest.mark.parametrize("kind, fields, a, b", [
    ("crossing_up", {"price": 100}, 99, 101),
    ("pct_up", {"pct": 5, "window": "1m"}, 100, 105.5),
    ("pct_down", {"pct": 5, "window": "1m"}, 100, 94.5),
])
def test_the_first_trade_after_a_cooldown_fires_when_the_trade_before_had_rearmed_it(
        r, feed, listen, create, user, kind, fields, a, b):
    market = listen()
    alert_id = create(type=kind, mode="recurring", cooldown_s=COOLDOWN_S, **fields)
    assert subscribed(feed, ["BTCUSDT"])
    market.trade("BTCUSDT", a)
    first = market.trade("BTCUSDT", b)
    market.trade("BTCUSDT", a)  # moved back past the re-arm point, while cooling down
    after = market.trade("BTCUSDT", b, at=first + (COOLDOWN_S + 10) * 1000)
    assert fired(r, user) == [(alert_id, first), (alert_id, after)]
