"""The Lua matcher against a real Redis: conditions, re-arm, expiry, layout, exactly-once."""

import itertools
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis

from webapp import keys
from webapp.alerts import index as alert_index
from webapp.inbox import service as inbox
from webapp.live.fanout import Message
from webapp.models import Alert
from worker import matcher as matching

MODES = (matching.INLINE, matching.OUTBOX)

T0 = int(time.time() * 1000)
_ids = itertools.count(1)


@pytest.fixture(params=MODES, autouse=True)
def mode(request):
    """Every test in both modes: one atomic step (one Redis), or the symbol's step and the
    users' step apart, as on a Redis Cluster (worker/outbox.py)."""
    return request.param


@pytest.fixture
def Matcher(mode):  # noqa: N802 - it stands in for the class
    return lambda r, **options: matching.Matcher(r, mode=mode, **options)


def arm(r, symbol="BTCUSDT", condition="above", target=100.0, mode="once", buffer=0.5,
        pct=False, expires_at=None, user_id=7, note=""):
    alert = Alert(id=next(_ids), user_id=user_id, symbol=symbol, condition=condition,
                  target=target, mode=mode, buffer=buffer, buffer_is_pct=pct,
                  expires_at=expires_at, note=note, active=True)
    alert_index.index(alert, r)
    return alert


def set_expiry(r, alert_id, ms):
    """Rewrite an indexed alert's expiry in place, as if the clock had moved on."""
    row = alert_index.unpack_row(r.hget(keys.alerts("BTCUSDT"), alert_id))
    r.hset(keys.alerts("BTCUSDT"), alert_id, alert_index.pack_row(row | {"expires_at": ms}))


def ticks(matcher, prices, symbol="BTCUSDT", start=T0, volume=False):
    """Feed prices a millisecond apart; returns the notification ids per tick."""
    feed = matcher.on_volume if volume else matcher.on_price
    return [feed(symbol, p, start + i) for i, p in enumerate(prices)]


def stored(r, nid):
    """A notification as its user's stream holds it (nid = '<entry id>-<uid>')."""
    eid, uid = nid.rsplit("-", 1)
    [(_, fields)] = r.xrange(keys.replay(uid), eid, eid)
    return json.loads(fields["data"])


def fired_alerts(r, nids):
    return [stored(r, n)["alert_id"] for n in nids]


def slow_path_items(r):
    return [item for _, f in r.xrange(keys.FIRED) for item in f["items"].split(",")]


def test_above_fires_at_or_above_target_once(r, Matcher):
    alert = arm(r, target=100)
    result = ticks(Matcher(r), [99.9, 100, 101, 102])
    assert [len(n) for n in result] == [0, 1, 0, 0]
    assert fired_alerts(r, result[1]) == [str(alert.id)]
    assert alert_index.symbols(r) == {}  # a one-shot alert leaves the index


def test_below_fires_at_or_below_target(r, Matcher):
    arm(r, condition="below", target=100)
    assert [len(n) for n in ticks(Matcher(r), [100.1, 100, 99])] == [0, 1, 0]


def test_volume_alert_fires_on_volume_not_price(r, Matcher):
    alert = arm(r, condition="volume_above", target=5000)
    matcher = Matcher(r)
    assert matcher.on_price("BTCUSDT", 9000, T0) == []
    nids = matcher.on_volume("BTCUSDT", 5000.5, T0 + 1)
    assert fired_alerts(r, nids) == [str(alert.id)]
    assert stored(r, nids[0])["type"] == "VOLUME_ALERT"
    assert r.hget(keys.price("BTCUSDT"), "volume") == "5000.5"


def test_price_alert_ignores_volume_ticks(r, Matcher):
    arm(r, target=100)
    assert Matcher(r).on_volume("BTCUSDT", 1e9, T0) == []


def test_recurring_rearms_after_absolute_buffer(r, Matcher):
    arm(r, target=100, mode="recurring", buffer=0.5)
    result = ticks(Matcher(r), [100, 100.5, 99.6, 100.2, 99.5, 99.9, 100])
    assert [len(n) for n in result] == [1, 0, 0, 0, 0, 0, 1]
    assert alert_index.symbols(r) == {"BTCUSDT": 1}


def test_recurring_rearms_after_percentage_buffer(r, Matcher):
    arm(r, target=100, mode="recurring", buffer=1, pct=True)  # re-arms at 99
    result = ticks(Matcher(r), [101, 99.5, 100, 99, 100])
    assert [len(n) for n in result] == [1, 0, 0, 0, 1]


def test_recurring_below_rearms_above_target_plus_buffer(r, Matcher):
    arm(r, condition="below", target=100, mode="recurring", buffer=2)
    result = ticks(Matcher(r), [99, 101, 99, 102, 100])
    assert [len(n) for n in result] == [1, 0, 0, 0, 1]


def test_recurring_volume_rearms(r, Matcher):
    arm(r, condition="volume_above", target=1000, mode="recurring", buffer=100)
    result = ticks(Matcher(r), [1000, 950, 1000, 900, 1001], volume=True)
    assert [len(n) for n in result] == [1, 0, 0, 0, 1]


def test_expired_alert_never_fires_and_leaves_index(r, Matcher):
    past = datetime.fromtimestamp(T0 / 1000, UTC).replace(tzinfo=None) - timedelta(seconds=1)
    alert = arm(r, target=100)
    # Indexed while live, then the clock passes its expiry: written straight to its row.
    set_expiry(r, alert.id, alert_index.to_ms(past))
    assert Matcher(r).on_price("BTCUSDT", 200, T0) == []
    assert not r.exists(keys.alerts("BTCUSDT"))
    assert alert_index.symbols(r) == {}


def test_recurring_alert_expiring_while_waiting_is_dropped_on_rearm(r, Matcher):
    alert = arm(r, target=100, mode="recurring")
    matcher = Matcher(r)
    assert len(matcher.on_price("BTCUSDT", 100, T0)) == 1
    set_expiry(r, alert.id, T0 + 5)
    assert matcher.on_price("BTCUSDT", 90, T0 + 10) == []
    assert matcher.on_price("BTCUSDT", 110, T0 + 20) == []
    assert alert_index.symbols(r) == {} and not r.exists(keys.alerts("BTCUSDT"))


def test_alert_only_compared_with_its_own_symbol(r, Matcher):
    arm(r, symbol="BTCUSDT", target=100)
    arm(r, symbol="ETHUSDT", condition="below", target=5000)
    matcher = Matcher(r)
    assert matcher.on_price("ETHUSDT", 6000, T0) == []
    assert matcher.on_price("XRPUSDT", 1e6, T0) == []
    assert matcher.on_price("BTCUSDT", 1, T0) == []
    assert len(matcher.on_price("ETHUSDT", 4999, T0 + 1)) == 1


def test_notification_layout_matches_the_contract(r, Matcher):
    alert = arm(r, target=65000, user_id=42, note='sell "half" <script>x</script>')
    pubsub = r.pubsub()
    pubsub.subscribe(keys.user_channel(42))
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    [nid] = Matcher(r).on_price("BTCUSDT", 65010.5, T0)
    n = stored(r, nid)
    assert n["type"] == "PRICE_ALERT" and n["status"] == "unread"
    assert n["user_id"] == 42 and n["alert_id"] == str(alert.id)
    assert n["title"] == "BTCUSDT above 65000"
    assert "65010.5" in n["message"] and "65000" in n["message"]
    assert n["data"]["note"] == 'sell "half" <script>x</script>'
    [(entry_id, fields)] = r.xrange(keys.replay(42))
    assert nid == f"{entry_id}-42" and inbox.unread_count(42, redis=r) == 1
    message = pubsub.get_message(timeout=2)
    payload = json.loads(message["data"])
    assert payload["id"] == entry_id and payload["event"] == "notification"
    assert payload["data"] == json.loads(fields["data"])  # published as stored
    live = Message.parse(message["data"])  # what the hub hands a browser: the id added
    assert live.id == entry_id and live.data == {"id": nid, **json.loads(fields["data"])}
    assert live.data["created_at"] == T0 and live.data["data"]["price"] == 65010.5
    [(_, slow)] = r.xrange(keys.FIRED)
    assert slow == {"type": "PRICE_ALERT", "price": "65010.5", "ts": str(T0),
                    "symbol": "BTCUSDT", "items": f"{nid}:{alert.id}:42:once"}
    pubsub.close()


def test_ticks_are_published_and_sampled_at_most_once_a_second(r, Matcher):
    pubsub = r.pubsub()
    pubsub.subscribe(keys.ticks_channel("BTCUSDT"))
    pubsub.get_message(timeout=2)
    ticks(Matcher(r), [1, 2, 3])
    Matcher(r).on_price("BTCUSDT", 4, T0 + 1000)
    got = [pubsub.get_message(timeout=2) for _ in range(2)]
    assert [json.loads(m["data"])["price"] for m in got] == [1, 4]
    assert pubsub.get_message(timeout=0.05) is None
    assert r.lrange(keys.spark("BTCUSDT"), 0, -1) == [f"[{T0},1]", f"[{T0 + 1000},4]"]
    assert r.hgetall(keys.price("BTCUSDT"))["price"] == "4"
    pubsub.close()


@pytest.mark.parametrize("price", [float("nan"), float("inf"), -1.0])
def test_garbled_tick_fires_nothing(r, price, Matcher):
    arm(r, target=1)
    arm(r, condition="below", target=1)
    assert Matcher(r).on_price("BTCUSDT", price, T0) == []


def test_a_zero_price_tick_fires_no_below_alert(r, Matcher):
    arm(r, condition="below", target=0.5)
    assert Matcher(r).on_price("BTCUSDT", 0, T0) == []
    assert r.zcard(keys.index("BTCUSDT", "below")) == 1


def test_a_zero_volume_tick_is_recorded_and_fires_nothing(r, Matcher):
    arm(r, condition="volume_above", target=0.001)
    assert Matcher(r).on_volume("BTCUSDT", 0, T0) == []
    assert r.hget(keys.price("BTCUSDT"), "volume") == "0"


def test_a_fired_one_shot_is_marked_until_the_slow_path_forgets_it(r, Matcher):
    fired, armed = arm(r, target=100), arm(r, target=200)
    recurring = arm(r, target=100, mode="recurring")
    assert len(Matcher(r).on_price("BTCUSDT", 100, T0)) == 2
    assert r.hgetall(keys.alerts_fired("BTCUSDT")) == {str(fired.id): str(T0)}
    assert sorted(r.hkeys(keys.alerts("BTCUSDT"))) == sorted([str(armed.id), str(recurring.id)])
    assert alert_index.symbols(r) == {"BTCUSDT": 2}  # counted out as it fired
    alert_index.unindex(fired.id, r)
    assert alert_index.symbols(r) == {"BTCUSDT": 2}  # not counted out twice
    alert_index.forget_fired("BTCUSDT", [fired.id, armed.id, recurring.id], r)
    assert not r.exists(keys.alerts_fired("BTCUSDT"))
    assert alert_index.symbols(r) == {"BTCUSDT": 2}


def test_storm_is_split_into_batches_and_fires_each_alert_once(r, Matcher):
    alerts = [arm(r, target=float(t)) for t in range(1, 51)]
    nids = Matcher(r, batch=7).on_price("BTCUSDT", 100, T0)
    assert len(nids) == len(set(nids)) == 50
    assert r.xlen(keys.FIRED) == 8 and len(slow_path_items(r)) == 50
    assert sorted(map(int, fired_alerts(r, nids))) == sorted(a.id for a in alerts)


def test_a_note_with_tabs_and_newlines_survives_its_packed_row(r, Matcher):
    note = "sell\thalf\n\tthen wait"
    alert = arm(r, target=100, note=note)
    assert alert_index.unpack_row(r.hget(keys.alerts("BTCUSDT"), alert.id))["note"] == note
    [nid] = Matcher(r).on_price("BTCUSDT", 100, T0)
    n = stored(r, nid)
    assert n["data"]["note"] == note and n["message"].endswith(" - " + note)
    assert n["data"]["target"] == 100 and n["data"]["mode"] == "once"


def test_batches_past_one_bulk_read_fire_and_rearm_every_alert(r, Matcher):
    # more alerts than one HMGET chunk (1000) reads, in one batch of the default size
    alerts = [arm(r, target=100 + t / 1000, mode="recurring", buffer=1, user_id=t % 9)
              for t in range(1500)]
    matcher = Matcher(r)
    assert len(matcher.on_price("BTCUSDT", 102, T0)) == 1500
    assert r.zcard(keys.rearm("BTCUSDT", "above")) == 1500
    assert matcher.on_price("BTCUSDT", 98, T0 + 1) == []
    assert r.zcard(keys.index("BTCUSDT", "above")) == 1500
    nids = matcher.on_price("BTCUSDT", 102, T0 + 2)
    assert sorted(map(int, fired_alerts(r, nids))) == sorted(a.id for a in alerts)
    assert r.hlen(keys.alerts("BTCUSDT")) == 1500 and alert_index.symbols(r) == {"BTCUSDT": 1500}


def run_twice_at_once(fn):
    """Two threads running `fn` side by side, as two listeners on one feed."""
    threads = [threading.Thread(target=fn) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)


def test_two_matchers_hammering_one_feed_fire_each_alert_once(r, redis_url, Matcher):
    alerts = [arm(r, target=float(t), user_id=t % 5) for t in range(1, 301)]
    prices = [float(p) for p in range(0, 320, 3)]
    results = []

    def run():
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        results.append(ticks(Matcher(client, batch=16), prices))
        client.close()

    run_twice_at_once(run)
    nids = [n for per_thread in results for tick in per_thread for n in tick]
    assert sorted(map(int, fired_alerts(r, nids))) == sorted(a.id for a in alerts)
    assert len(slow_path_items(r)) == len(alerts)


def test_two_matchers_on_the_same_ticks_give_one_notification_per_crossing(r, redis_url, Matcher):
    for t in (100, 101, 102):
        arm(r, target=float(t), mode="recurring", buffer=0.5)
    path = [99, 103, 99, 103, 101.5, 99, 100, 101]  # crossings: 3, 3, 0, 1, 1
    barrier = threading.Barrier(2, timeout=10)
    counts = []

    def run():
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        matcher = Matcher(client)
        mine = 0
        for i, price in enumerate(path):
            barrier.wait()  # both matchers see tick i before either sees tick i + 1
            mine += len(matcher.on_price("BTCUSDT", price, T0 + i))
        counts.append(mine)
        client.close()

    run_twice_at_once(run)
    assert sum(counts) == 8 == len(slow_path_items(r))


def test_a_replayed_or_older_trade_never_fires_a_crossing_again(r, Matcher):
    arm(r, target=100, mode="recurring", buffer=1)
    matcher = Matcher(r)
    assert len(matcher.on_price("BTCUSDT", 101, T0, seq=10)) == 1
    assert matcher.on_price("BTCUSDT", 98, T0 + 1, seq=11) == []  # re-arms
    # a lagging second listener replays the first crossing: dropped, not fired again
    assert matcher.on_price("BTCUSDT", 101, T0, seq=10) == []
    assert matcher.on_price("BTCUSDT", 101, T0 + 1, seq=11) == []  # same trade, replayed
    assert len(matcher.on_price("BTCUSDT", 101, T0 + 6, seq=12)) == 1


def test_without_trade_ids_older_timestamps_are_dropped(r, Matcher):
    arm(r, target=100)
    matcher = Matcher(r)
    matcher.on_price("BTCUSDT", 99, T0 + 10)
    assert matcher.on_price("BTCUSDT", 101, T0 + 9) == []
    assert len(matcher.on_price("BTCUSDT", 101, T0 + 10)) == 1
