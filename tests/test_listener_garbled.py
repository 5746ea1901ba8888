"""The listener meeting garbled frames from Binance: it logs each, skips it, keeps its
connection, and the next good tick still fires its alert exactly once."""

import json
import logging
import re
import threading
import time

import pytest

from webapp import keys
from webapp.accounts import service as accounts
from webapp.alerts import service as alerts
from worker.listener.connection import Listener
from worker.listener.pacing import Backoff
from worker.matcher import Matcher

GOOD_PRICE = 65010.5


class Tap:
    """The real matcher, keeping every price the listener handed it."""

    def __init__(self, matcher):
        self.matcher, self.prices = matcher, []
        self.changed = threading.Condition()

    def on_price(self, symbol, price, ts_ms, seq=0):
        fired = self.matcher.on_price(symbol, price, ts_ms, seq)
        with self.changed:
            self.prices.append(price)
            self.changed.notify_all()
        return fired

    def on_volume(self, symbol, volume, ts_ms):
        return self.matcher.on_volume(symbol, volume, ts_ms)

    def wait_for(self, price, timeout=10.0):
        with self.changed:
            return self.changed.wait_for(lambda: price in self.prices, timeout)


@pytest.fixture
def r(app):
    return app.extensions["redis"]


@pytest.fixture
def events(caplog):
    """The listener's structured log lines, as (event, fields) pairs."""
    caplog.set_level(logging.INFO, logger="worker.listener")

    def read(name):
        found = []
        for record in caplog.records:
            line = record.getMessage()
            fields = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line))
            if fields.get("event") == name:
                found.append({**fields, "line": line})
        return found

    return read


@pytest.fixture
def armed(app, r, feed):
    """An `above 65000` alert on BTCUSDT and a listener on the feed; yields (tap, user id)."""
    with app.app_context():
        uid = accounts.create_user("garbled@example.com", "long password").id
        alerts.create_alert(uid, {"symbol": "BTCUSDT", "type": "above", "price": 65000})
    tap = Tap(Matcher(r))
    listener = Listener(r, tap, feed.url, poll_s=0.02, heartbeat_s=0.05, recv_timeout_s=0.02,
                        backoff=Backoff(0.01, 0.1))
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    assert feed.wait_for_subscription("btcusdt@aggTrade")
    yield tap, uid
    listener.stop.set()
    thread.join(5)
    assert not thread.is_alive()


def agg(**fields):
    """A combined-stream aggTrade frame for BTCUSDT, with `fields` replaced (None: left out)."""
    now = int(time.time() * 1000)
    data = {"e": "aggTrade", "E": now, "s": "BTCUSDT", "a": 1, "p": "65010.50000000",
            "q": "1.00000000", "f": 1, "l": 1, "T": now, "m": True, "M": True}
    data.update(fields)
    data = {k: v for k, v in data.items() if v is not None}
    return json.dumps({"stream": "btcusdt@aggTrade", "data": data})


def mini(volume, ahead_ms=0):
    """A combined-stream miniTicker frame for BTCUSDT with this 24 h volume."""
    return json.dumps({"stream": "btcusdt@miniTicker", "data": {
        "e": "24hrMiniTicker", "E": int(time.time() * 1000) + ahead_ms, "s": "BTCUSDT",
        "c": "65000", "o": "65000", "h": "65000", "l": "65000", "v": volume, "q": "1"}})


YEAR_MS = 365 * 86400 * 1000
OVERSIZED = '{"stream": "btcusdt@aggTrade", "data": "' + "x" * (2 << 20)  # 2 MB, unclosed

GARBLED = [
    ("invalid_json", '{"stream": "btcusdt@aggTrade", "data": {"e": "aggTr', "bad_message"),
    ("an_array", "[1, 2, 3]", "bad_message"),
    ("a_string", '"aggTrade"', "bad_message"),
    ("a_number", "42", "bad_message"),
    ("null", "null", "bad_message"),
    ("missing_price", agg(p=None), "bad_message"),
    ("missing_symbol", agg(s=None), "bad_message"),
    ("missing_time", agg(T=None), "bad_message"),
    ("no_data", '{"stream": "btcusdt@aggTrade"}', "unhandled_message"),
    ("price_not_a_number", agg(p="sixty-five"), "bad_message"),
    ("price_a_list", agg(p=[]), "bad_message"),
    ("price_true", agg(p=True), "bad_message"),
    ("price_nan", agg(p="NaN"), "bad_message"),
    ("price_json_nan", agg(p=float("nan")), "bad_message"),  # json.dumps writes NaN
    ("price_negative", agg(p="-65010.5"), "bad_message"),
    ("price_zero", agg(p="0.00000000"), "bad_message"),
    ("price_infinite", agg(p="1e400"), "bad_message"),
    ("price_huge", agg(p="1e300"), "bad_message"),
    ("volume_nan", mini("NaN"), "bad_message"),
    ("volume_negative", mini("-1.5"), "bad_message"),
    ("volume_infinite", mini("Infinity"), "bad_message"),
    ("time_not_a_number", agg(T="soon"), "bad_message"),
    ("time_infinite", agg(T=float("inf")), "bad_message"),  # json.dumps writes Infinity
    # taken in, a time ahead would hold back the symbol's later trades until it came
    ("time_a_year_ahead", agg(T=int(time.time() * 1000) + YEAR_MS), "bad_message"),
    ("time_two_hours_ahead", agg(T=int(time.time() * 1000) + 2 * 3600_000), "bad_message"),
    ("volume_time_a_year_ahead", mini("10", ahead_ms=YEAR_MS), "bad_message"),
    ("symbol_a_number", agg(s=42), "bad_message"),
    ("symbol_null", json.dumps({"stream": "btcusdt@aggTrade", "data": {
        "e": "aggTrade", "s": None, "a": 1, "p": "1", "T": 1}}), "bad_message"),
    ("symbol_a_list", agg(s=["BTCUSDT"]), "bad_message"),
    ("symbol_lone_surrogate", agg(s="\ud800"), "bad_message"),
    ("symbol_not_ascii", agg(s="BTC\u00dcSDT"), "bad_message"),
    ("nested_deep", "[" * 100_000, "bad_message"),
    ("unknown_stream", json.dumps({"stream": "btcusdt@depth", "data": {
        "e": "depthUpdate", "E": 1, "s": "BTCUSDT", "b": [], "a": []}}), "unhandled_message"),
    ("error_object", '{"code": -1121, "msg": "Invalid symbol."}', "server_error"),
    ("oversized", OVERSIZED, "bad_message"),
]


@pytest.mark.parametrize(("frame", "logged"), [(f, e) for _, f, e in GARBLED],
                         ids=[name for name, _, _ in GARBLED])
def test_a_garbled_frame_is_logged_and_skipped_and_the_next_tick_fires_once(
        r, feed, armed, events, frame, logged):
    tap, uid = armed
    assert feed.send_raw(frame) == 1
    feed.trade("BTCUSDT", GOOD_PRICE)
    assert tap.wait_for(GOOD_PRICE)
    assert tap.prices == [GOOD_PRICE]  # nothing of the garbled frame reached the matcher
    fired = [json.loads(f["data"]) for _, f in r.xrange(keys.replay(uid))]
    assert [n["data"]["price"] for n in fired] == [GOOD_PRICE]
    [line] = events(logged)
    assert len(line["line"]) < 600  # an oversized frame is not copied into the log
    assert feed.connections_total == 1 and feed.connection_count == 1  # kept its connection


def test_a_binary_frame_is_logged_and_skipped(r, feed, armed, events):
    tap, uid = armed
    assert feed.send_raw(b"\x00\x9f\x92\x96 not text") == 1
    feed.trade("BTCUSDT", GOOD_PRICE)
    assert tap.wait_for(GOOD_PRICE)
    assert r.xlen(keys.replay(uid)) == 1
    [line] = events("bad_message")
    assert line["error"] == '"binary frame"'
    assert feed.connections_total == 1


def test_a_burst_of_garbage_between_good_ticks_costs_no_tick(r, feed, armed, events):
    tap, uid = armed
    for _, frame, _ in GARBLED:
        feed.send_raw(frame)
    feed.send_raw(b"\x01\x02")
    feed.trade("BTCUSDT", 64000)  # below: re-arms nothing, fires nothing
    feed.trade("BTCUSDT", GOOD_PRICE)
    assert tap.wait_for(GOOD_PRICE)
    assert tap.prices == [64000, GOOD_PRICE]
    assert r.xlen(keys.replay(uid)) == 1
    logged = sum(len(events(name)) for name in ("bad_message", "unhandled_message",
                                                "server_error"))
    assert logged == len(GARBLED) + 1
    assert feed.connections_total == 1
