"""Ticks read together are matched together: one round trip for each tick a stream has,
each stream's ticks in order, each crossing fired once, through a lost reply and a restart."""

import collections
import itertools
import json
import threading
import time

import pytest
import redis

from tests.test_listener import eventually
from webapp import keys
from webapp.alerts import index as alert_index
from webapp.exceptions import TicksNotMatched
from webapp.models import Alert
from worker.listener.connection import Listener
from worker.listener.pacing import Backoff
from worker.matcher import OUTBOX, Matcher

T0 = int(time.time() * 1000)
_ids = itertools.count(1)


def arm(r, symbol, condition, target, mode="recurring", user_id=7):
    alert = Alert(id=next(_ids), user_id=user_id, symbol=symbol, condition=condition,
                  target=target, mode=mode, buffer=1.0, buffer_is_pct=False, expires_at=None,
                  note="", active=True)
    alert_index.index(alert, r)
    return alert.id


def fired(r, user_id=7):
    """(alert id, price) of each notification in the user's stream, oldest first."""
    return [(int(d["alert_id"]), d["data"]["price"]) for d in (
        json.loads(f["data"]) for _, f in r.xrange(keys.replay(user_id)))]


def batch(*prices):
    return [("price", symbol, price, T0 + i, i + 1) for i, (symbol, price) in enumerate(prices)]


def test_a_batch_fires_what_its_ticks_fire_one_by_one_in_each_streams_order(r):
    up, down = arm(r, "AAAUSDT", "above", 100), arm(r, "BBBUSDT", "below", 50)
    ids = Matcher(r).on_ticks(batch(
        ("AAAUSDT", 101), ("BBBUSDT", 49), ("AAAUSDT", 98), ("AAAUSDT", 102),
        ("BBBUSDT", 52), ("BBBUSDT", 48), ("AAAUSDT", 101.5)))
    assert len(ids) == 4
    notes = fired(r)
    assert [p for a, p in notes if a == up] == [101, 102]  # re-armed at 98, not again at 101.5
    assert [p for a, p in notes if a == down] == [49, 48]


def test_a_storm_inside_a_batch_finishes_before_its_streams_next_tick(r):
    storm = [arm(r, "AAAUSDT", "above", 100 + i / 10, mode="once") for i in range(7)]
    other = arm(r, "BBBUSDT", "below", 50, mode="once")
    ids = Matcher(r, batch=2).on_ticks(batch(("AAAUSDT", 101), ("BBBUSDT", 49),
                                              ("AAAUSDT", 99)))
    assert len(ids) == 8
    assert sorted(a for a, _ in fired(r)) == sorted([*storm, other])
    assert {p for a, p in fired(r) if a in storm} == {101}  # all at the storm's own tick


def test_garbled_ticks_in_a_batch_fire_nothing_and_leave_the_rest(r):
    up = arm(r, "AAAUSDT", "above", 100)
    ticks = batch(("AAAUSDT", float("nan")), ("AAAUSDT", -5), ("AAAUSDT", 0), ("AAAUSDT", 101))
    assert len(Matcher(r).on_ticks(ticks)) == 1
    assert fired(r) == [(up, 101)]


def test_a_batch_after_redis_forgot_the_script_loads_it_and_fires_once(r):
    up = arm(r, "AAAUSDT", "above", 100)
    matcher = Matcher(r)
    matcher.on_ticks(batch(("AAAUSDT", 99)))
    r.script_flush()
    assert len(matcher.on_ticks(batch(("BBBUSDT", 5), ("AAAUSDT", 101)))) == 1
    assert fired(r) == [(up, 101)]


def test_a_timed_out_batch_leaves_every_tick_unmatched_and_the_retry_fires_each_once(
        r, redis_url):
    up, down = arm(r, "AAAUSDT", "above", 100), arm(r, "BBBUSDT", "below", 50)
    impatient = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=0.2)
    matcher = Matcher(impatient)
    matcher.on_ticks(batch(("AAAUSDT", 99)))
    ticks = batch(("AAAUSDT", 101), ("BBBUSDT", 49), ("AAAUSDT", 98), ("AAAUSDT", 102))
    r.client_pause(600, all=True)  # a frozen Redis: the matcher's reads time out
    with pytest.raises(TicksNotMatched) as lost:
        matcher.on_ticks(ticks)
    assert lost.value.unmatched == ticks  # every round counts as not done, in order
    r.ping()  # waits out the pause
    for kind, symbol, value, ts_ms, seq in lost.value.unmatched:  # as the held ticks replay
        matcher.on_price(symbol, value, ts_ms, seq) if kind == "price" else None
    assert sorted(fired(r)) == sorted([(up, 101), (down, 49), (up, 102)])
    impatient.close()


def test_a_burst_on_the_wire_reaches_the_matcher_in_batches_and_fires_each_crossing_once(
        r, feed):
    up = arm(r, "AAAUSDT", "above", 100)
    others = [f"S{i:02d}USDT" for i in range(30)]
    for symbol in others:
        arm(r, symbol, "below", 1)
    matcher = Matcher(r)
    calls = []
    on_ticks = matcher.on_ticks
    matcher.on_ticks = lambda ticks: calls.append(len(ticks)) or on_ticks(ticks)
    listener = Listener(r, matcher, feed.url, poll_s=0.02, heartbeat_s=0.05,
                        recv_timeout_s=0.02, backoff=Backoff(0.01, 0.1))
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    try:
        assert feed.wait_for_subscription("aaausdt@aggTrade")
        assert eventually(lambda: all(f"{s.lower()}@aggTrade" in feed.subscriptions()
                                      for s in others))
        crossings = [("AAAUSDT", 101.0), ("AAAUSDT", 98.0)] * 20
        burst = [t for crossing, other in zip(crossings, itertools.cycle(others))
                 for t in (crossing, (other, 5.0))]
        assert feed.trades(burst)
        assert eventually(lambda: len(fired(r)) >= 20, timeout=10)
        assert sum(calls) == len(burst)
        assert max(calls) > 1  # read together, matched together
        assert [p for a, p in fired(r)] == [101.0] * 20 and {a for a, _ in fired(r)} == {up}
    finally:
        listener.stop.set()
        thread.join(5)


def test_a_level_only_symbol_that_gains_a_crossing_is_matched_with_every_key_at_once(r):
    """A symbol with level alerts only is called with its level keys; the tick after it
    gains another kind does nothing on that short call and runs whole on the full one."""
    up = arm(r, "AAAUSDT", "above", 100)
    matcher = Matcher(r)
    matcher.on_ticks(batch(("AAAUSDT", 99), ("BBBUSDT", 5)))
    cross = arm(r, "AAAUSDT", "crossing_up", 105)
    ticks = [("price", "AAAUSDT", price, T0 + 10 + i, 10 + i) for i, price in
             enumerate([104, 99, 106])]
    matcher.on_ticks(ticks[:2])  # in one batch; placed by 104, re-armed by 99
    matcher.on_price("AAAUSDT", 106, ticks[2][3], ticks[2][4])  # one by one too
    assert fired(r) == [(up, 104), (up, 106), (cross, 106)]


def test_every_tick_of_a_symbol_with_other_kinds_fires_as_it_would_with_every_key(
        r, monkeypatch):
    """With no memory of which symbols need every key, each tick of a crossing symbol goes
    short first, then whole: still each crossing once, in order, batched or not."""
    monkeypatch.setattr("worker.matcher.ALL_KEYS_S", 0.0)
    cross = arm(r, "AAAUSDT", "crossing", 100, mode="recurring")
    down = arm(r, "BBBUSDT", "below", 50)
    matcher = Matcher(r)
    prices = [99, 101, 99.5, 98, 102, 103]
    ticks = [("price", "AAAUSDT", p, T0 + i, i + 1) for i, p in enumerate(prices)]
    matcher.on_ticks([*ticks[:3], ("price", "BBBUSDT", 49, T0, 1)])
    for _, symbol, value, ts_ms, seq in ticks[3:]:
        matcher.on_price(symbol, value, ts_ms, seq)
    # placed by 99; through 100 at 101 (a buffer past it: armed again), at 99.5 (armed
    # again at 98, a buffer below), and at 102
    assert fired(r) == [(down, 49), (cross, 101), (cross, 99.5), (cross, 102)]


def test_a_storm_in_many_batches_fires_each_alert_once_and_none_again(r):
    storm = [arm(r, "AAAUSDT", "above", 100 + i / 100, mode="once") for i in range(95)]
    matcher = Matcher(r, batch=10)
    ids = matcher.on_price("AAAUSDT", 101, T0, 1)
    assert len(ids) == len(set(ids)) == 95
    assert sorted(a for a, _ in fired(r)) == sorted(storm)
    assert matcher.on_price("AAAUSDT", 102, T0 + 1, 2) == []  # all gone: none twice


def racing(first, second, price, ts, seq):
    """first's match script calls, with `second` matching a trade after the first of them
    (two listeners on one stream: a lease handed over mid-storm); its answers land in the
    list returned."""
    return meanwhile(first, lambda: second.on_price("AAAUSDT", price, ts, seq))


def meanwhile(first, work):
    """After first's next match script call, `work()` once; its answer lands in the list."""
    script, done = first._script, []

    def call(*args, **kwargs):
        reply = script(*args, **kwargs)
        if not done:
            done.append(work())
        return reply

    first._script = call
    return done


def dies_after_one_call(first):
    """first's match script calls fail after the first, as if its process was killed."""
    script, calls = first._script, []

    def call(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise redis.ConnectionError("the listener's process was killed")
        return script(*args, **kwargs)

    first._script = call
    return script


@pytest.mark.parametrize("path", ["one tick", "a batch of ticks", "outbox"])
def test_a_newer_trade_matched_mid_storm_finishes_the_storm_first_each_alert_once(r, path):
    """Listener B matches a newer trade between two batches of A's storm: B first finishes
    A's storm at A's price (its crossings need A's trade before), then matches its own; A's
    later continuation finds nothing left. Each level fires once; B's trade stays the last."""
    levels = [arm(r, "AAAUSDT", "crossing_up", 100 + i) for i in range(1, 11)]
    mode = OUTBOX if path == "outbox" else None  # a cluster's two steps, here on one Redis
    first, second = Matcher(r, batch=3, mode=mode), Matcher(r, mode=mode)
    assert first.on_price("AAAUSDT", 100, T0, 1) == []
    raced = racing(first, second, 112, T0 + 2, 3)
    if path != "a batch of ticks":
        ids = first.on_price("AAAUSDT", 111, T0 + 1, 2)
    else:  # the first batch goes out packed with the round, the rest one call at a time
        ids = first.on_ticks([("price", "AAAUSDT", 111, T0 + 1, 2)])
    assert len(ids) + len(raced[0]) == 10 and len(raced[0]) in (4, 7)
    assert sorted(a for a, _ in fired(r)) == sorted(levels)
    assert {price for _, price in fired(r)} == {111}
    state = r.hgetall(keys.price("AAAUSDT"))
    assert (state["price"], state["mts"], state["mtsq"]) == ("112", str(T0 + 2), "3")
    assert "mtsopen" not in state
    assert second.on_price("AAAUSDT", 113, T0 + 3, 4) == []  # none of them twice


def test_a_trade_back_below_mid_storm_rearms_only_after_the_storm_fired_each_once(r):
    """B's trade comes back under the levels A's storm is crossing: it would re-arm alerts
    A just fired, and A's later batches fire them again, had B not finished the storm first."""
    levels = [arm(r, "AAAUSDT", "crossing_up", 100 + i) for i in range(1, 11)]
    first, second = Matcher(r, batch=3), Matcher(r)
    first.on_price("AAAUSDT", 100, T0, 1)
    raced = racing(first, second, 100.5, T0 + 2, 3)
    ids = first.on_price("AAAUSDT", 111, T0 + 1, 2)
    assert len(ids) + len(raced[0]) == 10
    assert sorted(a for a, _ in fired(r)) == sorted(levels)  # each once, at 111
    assert r.hget(keys.price("AAAUSDT"), "price") == "100.5"
    # re-armed by the trade back below (their buffer is 1): the next crossing fires them
    assert len(second.on_price("AAAUSDT", 111, T0 + 3, 4)) == 9


@pytest.mark.parametrize("mode", [None, OUTBOX])
def test_a_storm_whose_listener_died_after_one_batch_is_finished_by_the_next_trade(r, mode):
    levels = [arm(r, "AAAUSDT", "crossing_up", 100 + i) for i in range(1, 11)]
    first, second = Matcher(r, batch=3, mode=mode), Matcher(r, mode=mode)
    first.on_price("AAAUSDT", 100, T0, 1)
    script = dies_after_one_call(first)
    with pytest.raises(redis.ConnectionError):
        first.on_price("AAAUSDT", 111, T0 + 1, 2)
    assert len(fired(r)) == 3
    finished = second.on_price("AAAUSDT", 112, T0 + 2, 3)
    assert len(finished) == 7 and sorted(a for a, _ in fired(r)) == sorted(levels)
    assert {price for _, price in fired(r)} == {111}
    first._script = script  # back: its tick retried fires nothing again
    assert first.on_price("AAAUSDT", 113, T0 + 3, 4) == [] and len(fired(r)) == 10


@pytest.mark.parametrize("dies", [False, True])
def test_a_level_storm_of_whole_batches_closes_its_mark(r, dies):
    """Six one-shot levels, batches of 3: the last call finds nothing left (a quiet tick's
    answer) and must still close the storm, or every later trade would wait on it."""
    levels = [arm(r, "AAAUSDT", "above", 100 + i, mode="once") for i in range(1, 7)]
    first, second = Matcher(r, batch=3), Matcher(r)
    if dies:
        dies_after_one_call(first)
        with pytest.raises(redis.ConnectionError):
            first.on_price("AAAUSDT", 110, T0, 1)
        assert len(second.on_price("AAAUSDT", 111, T0 + 1, 2)) == 3  # the storm's rest
    else:
        assert len(first.on_price("AAAUSDT", 110, T0, 1)) == 6
    assert sorted(a for a, _ in fired(r)) == sorted(levels)
    assert "mtsopen" not in r.hgetall(keys.price("AAAUSDT"))
    assert second.on_price("AAAUSDT", 112, T0 + 2, 3) == []


def test_a_newer_trade_in_a_batch_of_ticks_finishes_the_open_storm_first(r):
    """The second listener reads its ticks in a batch (one packed round): the newer trade
    answered "storm open" is finished and matched before that stream's next tick."""
    levels = [arm(r, "AAAUSDT", "crossing_up", 100 + i) for i in range(1, 11)]
    first, second = Matcher(r, batch=3), Matcher(r)
    first.on_price("AAAUSDT", 100, T0, 1)
    raced = meanwhile(first, lambda: second.on_ticks([("price", "AAAUSDT", 112, T0 + 2, 3),
                                                      ("price", "AAAUSDT", 100.5, T0 + 3, 4),
                                                      ("price", "AAAUSDT", 111, T0 + 4, 5)]))
    ids = first.on_price("AAAUSDT", 111, T0 + 1, 2)
    # A's storm: all 10 once; then 112 (nothing), 100.5 re-arms 9, 111 fires those 9
    assert len(ids) + len(raced[0]) == 19
    prices = [price for _, price in fired(r)]
    assert sorted(prices) == [111] * 19
    counts = collections.Counter(a for a, _ in fired(r))
    assert counts == {alert: 1 if alert == levels[0] else 2 for alert in levels}
    assert r.hget(keys.price("AAAUSDT"), "price") == "111"


@pytest.mark.parametrize("mark", [f"{T0 - 5}:1:99", "not a tick"])
def test_a_mark_of_no_last_trade_is_dropped_not_obeyed(r, mark):
    """A storm mark whose tick is not the last trade recorded (code that knew no mark
    recorded a newer one: a rollback), or unreadable, is dropped; the trade is matched."""
    up = arm(r, "AAAUSDT", "above", 100)
    matcher = Matcher(r)
    assert matcher.on_price("AAAUSDT", 99, T0, 1) == []
    r.hset(keys.price("AAAUSDT"), "mtsopen", mark)
    assert len(matcher.on_price("AAAUSDT", 101, T0 + 1, 2)) == 1 and fired(r) == [(up, 101)]
    assert "mtsopen" not in r.hgetall(keys.price("AAAUSDT"))
