"""Crossings, moves within a window, channels and cooldowns in the Lua matcher (real Redis).

Ticks are fed a second apart unless a test says otherwise; each test names the edge it pins.
"""

import itertools
import json
import time

import pytest

from webapp import keys
from webapp.alerts import index as alert_index
from webapp.models import Alert
from worker.matcher import Matcher

T0 = (int(time.time()) - 3600) * 1000  # whole seconds, an hour ago: windows are per second
_ids = itertools.count(1)


def arm(r, condition, target, mode="once", buffer=0.0, high=None, window_s=None,
        cooldown_s=0, symbol="BTCUSDT", user_id=7, note=""):
    alert = Alert(id=next(_ids), user_id=user_id, symbol=symbol, condition=condition,
                  target=target, high=high, window_s=window_s, mode=mode, buffer=buffer,
                  buffer_is_pct=False, cooldown_s=cooldown_s, expires_at=None, note=note,
                  active=True)
    alert_index.index(alert, r)
    return alert


class Feed:
    """Trades for one symbol, `step_ms` apart unless given a time."""

    def __init__(self, r, symbol="BTCUSDT", step_ms=1000):
        self.matcher, self.r, self.symbol = Matcher(r), r, symbol
        self.at, self.step_ms, self.seq = T0, step_ms, itertools.count(1)

    def __call__(self, *prices, at=None):
        """Fired notifications per price, as (alert id, stored notification)."""
        out = []
        for price in prices:
            self.at = at if at is not None else self.at + self.step_ms
            at = None
            nids = self.matcher.on_price(self.symbol, price, self.at, next(self.seq))
            out.append([(n["alert_id"], n) for n in map(self.stored, nids)])
        return out

    def stored(self, nid):
        eid, uid = nid.rsplit("-", 1)
        [(_, fields)] = self.r.xrange(keys.replay(uid), eid, eid)
        return json.loads(fields["data"])


def fires(result):
    """How many fired at each tick."""
    return [len(tick) for tick in result]


def test_crossing_up_fires_on_the_trade_that_crosses_never_on_the_first_after_creation(r):
    feed = Feed(r)
    feed(99)
    alert = arm(r, "crossing_up", 100)
    result = feed(101, 99, 100, 102)  # 101: the first trade after creation fires nothing
    assert fires(result) == [0, 0, 1, 0] and result[2][0][0] == str(alert.id)
    assert fires(feed(99, 101)) == [0, 0]  # once: gone after firing


def test_crossing_up_notification_says_the_level_and_the_trade_before(r):
    feed = Feed(r)
    arm(r, "crossing_up", 100, note="breakout")
    feed(99)
    [[(_, n)]] = [t for t in feed(100.5) if t]
    assert n["title"] == "BTCUSDT crossed up through 100"
    assert n["message"] == ("BTCUSDT traded at 100.5, crossing up through 100 (the trade "
                            "before: 99) - breakout")
    assert n["data"] | {"price": 100.5} == n["data"]
    assert n["data"]["previous"] == 99 and n["data"]["direction"] == "up"


def test_equal_prices_at_the_level_fire_once_and_a_cross_needs_to_come_from_below(r):
    feed = Feed(r)
    arm(r, "crossing_up", 100, mode="recurring")
    feed(98)
    assert fires(feed(100, 100, 100, 101, 100, 99.99, 100)) == [1, 0, 0, 0, 0, 0, 1]


def test_crossing_down_and_crossing_fire_on_their_directions(r):
    feed = Feed(r)
    down = arm(r, "crossing_down", 100, mode="recurring")
    both = arm(r, "crossing", 100, mode="recurring")
    feed(101)
    result = feed(99, 101, 100, 99, 102)
    fired = [sorted(a for a, _ in tick) for tick in result]
    assert fired == [sorted([str(down.id), str(both.id)]), [str(both.id)],
                     sorted([str(down.id), str(both.id)]), [], [str(both.id)]]


def test_a_recurring_crossing_with_a_buffer_waits_to_move_the_buffer_back(r):
    feed = Feed(r)
    arm(r, "crossing_up", 100, mode="recurring", buffer=2)
    feed(95)
    assert fires(feed(101, 99, 101, 98, 101)) == [1, 0, 0, 0, 1]


def test_a_gap_jump_over_the_level_still_crosses(r):
    feed = Feed(r)
    arm(r, "crossing", 100, mode="recurring")
    feed(90)
    assert fires(feed(110, 90)) == [1, 1]


def test_pct_up_fires_when_the_move_from_the_window_low_reaches_pct(r):
    feed = Feed(r)
    arm(r, "pct_up", 5, window_s=60)
    result = feed(100, 103, 104.99, 105, 106)
    assert fires(result) == [0, 0, 0, 1, 0]
    n = result[3][0][1]
    assert n["title"] == "BTCUSDT up 5% in 1m"
    assert n["data"]["low"] == 100 and n["data"]["low_at"] == T0 + 1000
    assert n["data"]["window"] == "1m" and n["data"]["move_pct"] == pytest.approx(5)


def test_figures_in_the_words_read_as_the_trades_did(r):
    """172.46, not 172.46000000000001 (the shortest text that reads back as the number)."""
    feed = Feed(r)
    arm(r, "pct_up", 0.1, window_s=60)
    arm(r, "crossing_up", 172.5)
    feed(172.46)
    [(_, crossed), (_, moved)] = sorted(next(t for t in feed(172.64) if t),
                                        key=lambda fired: fired[1]["title"])
    assert crossed["message"].endswith("(the trade before: 172.46)"), crossed["message"]
    assert moved["message"].endswith("above the 1m low of 172.46"), moved["message"]
    for n in (crossed, moved):
        assert "172.46000" not in r.xrange(keys.replay(n["user_id"]))[-1][1]["data"]


def test_pct_down_measures_from_the_window_high(r):
    feed = Feed(r)
    arm(r, "pct_down", 10, window_s=300)
    result = feed(100, 120, 110, 108)
    assert fires(result) == [0, 0, 0, 1]
    assert result[3][0][1]["data"]["high"] == 120


def test_a_recurring_move_rearms_under_pct_minus_buffer_not_on_every_tick(r):
    feed = Feed(r)
    arm(r, "pct_up", 5, mode="recurring", buffer=1, window_s=3600)
    # 105 fires; a steady trend fires nothing more; back under 4% re-arms; 5% again fires
    assert fires(feed(100, 105, 106, 107, 108, 103.9, 104, 105.5)) == [0, 1, 0, 0, 0, 0, 0, 1]


def test_the_window_rolls_the_old_low_out(r):
    feed = Feed(r, step_ms=10_000)
    arm(r, "pct_up", 5, window_s=60)
    # the 100 at +10 s has left the 1 m window by +80 s; the low is then 103
    assert fires(feed(100, 103, 103, 103, 103, 103, 103, 107)) == [0] * 7 + [0]
    assert fires(feed(108.2)) == [1]


def test_after_a_gap_longer_than_the_window_there_is_no_move(r):
    feed = Feed(r)
    arm(r, "pct_up", 5, window_s=60)
    feed(100)
    assert fires(feed(110, at=T0 + 10 * 60_000)) == [0]  # the window holds only this trade
    assert fires(feed(115.6)) == [1]


def test_a_move_alert_created_later_measures_from_the_window_kept_since(r):
    feed = Feed(r)
    arm(r, "pct_up", 50, window_s=60, symbol="BTCUSDT")  # keeps the 1 m window going
    feed(100, 101)
    arm(r, "pct_up", 2, window_s=60)
    assert fires(feed(102)) == [1]


def test_channel_exit_fires_on_leaving_after_having_been_inside(r):
    feed = Feed(r)
    alert = arm(r, "channel_exit", 100, high=110, mode="recurring")
    result = feed(105, 111, 112, 105, 99, 98)
    assert fires(result) == [0, 1, 0, 0, 1, 0]
    assert result[1][0][1]["title"] == "BTCUSDT left 100-110"
    assert result[1][0][1]["data"]["direction"] == "above"
    assert result[4][0][1]["data"]["direction"] == "below"
    assert alert.id


def test_channel_exit_created_outside_waits_to_be_inside_first(r):
    feed = Feed(r)
    arm(r, "channel_exit", 100, high=110)
    assert fires(feed(120, 115, 105, 111)) == [0, 0, 0, 1]


def test_channel_bounds_belong_to_the_channel(r):
    feed = Feed(r)
    arm(r, "channel_exit", 100, high=110, mode="recurring")
    assert fires(feed(100, 110, 100, 110.01, 109.99, 99.99)) == [0, 0, 0, 1, 0, 1]


def test_channel_enter_fires_on_coming_in_but_not_on_a_jump_over(r):
    feed = Feed(r)
    arm(r, "channel_enter", 100, high=110, mode="recurring")
    result = feed(120, 105, 120, 90, 95, 100)
    assert fires(result) == [0, 1, 0, 0, 0, 1]
    assert result[1][0][1]["title"] == "BTCUSDT entered 100-110"


def test_channel_enter_created_inside_fires_only_after_leaving_and_coming_back(r):
    feed = Feed(r)
    arm(r, "channel_enter", 100, high=110)
    assert fires(feed(105, 106, 111, 109)) == [0, 0, 0, 1]


def test_a_cooldown_holds_a_recurring_alert_back_then_it_rearms_as_usual(r):
    feed = Feed(r)
    arm(r, "above", 100, mode="recurring", buffer=1, cooldown_s=60)
    assert fires(feed(101)) == [1]
    assert fires(feed(98, 101, 98, 101)) == [0, 0, 0, 0]  # cooling down
    assert fires(feed(98, at=T0 + 70_000)) == [0]  # over; the trade before was 101: waits
    assert fires(feed(101)) == [1]


def test_a_trade_right_after_a_cooldown_fires_when_the_market_had_moved_back(r):
    feed = Feed(r)
    arm(r, "above", 100, mode="recurring", buffer=1, cooldown_s=60)
    assert fires(feed(101, 98)) == [1, 0]
    assert fires(feed(101, at=T0 + 70_000)) == [1]


def test_a_cooldown_applies_to_crossings_too(r):
    feed = Feed(r)
    arm(r, "crossing", 100, mode="recurring", cooldown_s=30)
    feed(99)
    assert fires(feed(101, 99, 101)) == [1, 0, 0]
    assert fires(feed(99, at=T0 + 60_000)) == [1]


def test_an_expired_alert_of_any_kind_leaves_instead_of_firing(r):
    feed = Feed(r)
    for kind, extra in [("crossing_up", {}), ("pct_up", {"window_s": 60}),
                        ("channel_exit", {"high": 110})]:
        alert = arm(r, kind, 100 if kind != "pct_up" else 1, **extra)
        row = alert_index.unpack_row(r.hget(keys.alerts("BTCUSDT"), alert.id))
        r.hset(keys.alerts("BTCUSDT"), alert.id, alert_index.pack_row(row | {"expires_at": T0 + 1}))
    assert fires(feed(99, 105, 120)) == [0, 0, 0]  # each leaves when it would have acted
    assert r.hlen(keys.alerts("BTCUSDT")) == 0 and r.hget("tb:symbols", "BTCUSDT") is None
    assert r.hgetall(keys.kinds_in_use("BTCUSDT")) == {}


def test_an_edit_that_keeps_what_the_alert_watches_keeps_its_phase(r):
    feed = Feed(r)
    alert = arm(r, "above", 100, mode="recurring", buffer=5)
    assert fires(feed(101)) == [1]
    alert.note = "edited"
    alert_index.index(alert, r)  # still waiting to re-arm: no second fire for one crossing
    assert fires(feed(102)) == [0]
    alert.target = 103
    alert_index.index(alert, r)  # a new level is a new alert: armed
    assert fires(feed(103.5)) == [1]


def test_an_edit_keeps_a_channel_inside(r):
    feed = Feed(r)
    alert = arm(r, "channel_exit", 100, high=110)
    feed(105)
    alert.note = "edited"
    alert_index.index(alert, r)
    assert fires(feed(111)) == [1]


def test_rebuild_keeps_each_kind_where_it_waits(r, app):
    feed = Feed(r)
    inside = arm(r, "channel_exit", 100, high=110)
    move = arm(r, "pct_up", 5, mode="recurring", buffer=1, window_s=60)
    cross = arm(r, "crossing_up", 100, mode="recurring")
    feed(99, 105)  # inside placed; move fires (6.06 %) and waits; cross fires and waits
    with app.app_context():
        from webapp.extensions import db

        for a in (inside, move, cross):
            db.session.merge(a)
        db.session.commit()
        alert_index.rebuild(r)
    assert fires(feed(111)) == [1]  # the channel was still inside; move and cross wait


def test_a_thousand_alerts_of_mixed_kinds_each_fire_exactly_once(r):
    feed = Feed(r)
    made = []
    for i in range(200):
        level = 100 + i * 0.05  # 100 .. 109.95
        made += [arm(r, "crossing_up", level), arm(r, "above", level),
                 arm(r, "channel_exit", level, high=level + 20),
                 arm(r, "pct_up", 1 + i * 0.05, window_s=900),
                 arm(r, "crossing", level)]
    feed(99)
    result = feed(*[99 + k * 0.5 for k in range(1, 80)])  # a climb to 138.5
    fired = [alert_id for tick in result for alert_id, _ in tick]
    assert len(fired) == len(set(fired)) == 1000
    assert r.hlen(keys.alerts("BTCUSDT")) == 0


def test_an_indexed_id_without_its_row_does_not_stop_the_others_from_firing(r):
    feed = Feed(r)
    alerts = [arm(r, "above", 100), arm(r, "crossing_up", 100), arm(r, "above", 101)]
    feed(99)
    r.zadd(keys.index("BTCUSDT", "above"), {"999999": 99.5})  # stale members, first by score
    r.zadd(keys.index("BTCUSDT", "xup"), {"999998": 99.5})
    fired = [alert_id for tick in feed(102) for alert_id, _ in tick]
    assert sorted(fired) == sorted(str(a.id) for a in alerts)
