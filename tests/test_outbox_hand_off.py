"""The listener's hand-off on a Redis Cluster: a tick's notification reaches its user before
the batch is handed to the slow path (COMMIT, then XDEL), in a thread of its own; a hand-on
that stalls, fails or finds the queue full leaves the batch to the sweep, each once."""

import itertools
import time

from webapp import keys
from webapp.alerts import index as alert_index
from worker.matcher import Matcher
from worker.outbox import SWEEP_AGE_MS, Outbox

from .test_matcher_cluster import arm, inbox, slow_path_items, symbol_per_master

T0 = int(time.time() * 1000)


def away_from_fired(rc):
    """A symbol and a user whose slots another master than tb:{fired}'s owns."""
    fired = rc.get_node_from_key(keys.FIRED).name
    symbol = next(s for s in symbol_per_master(rc) if rc.get_node_from_key(keys.alerts(s)).name
                  != fired)
    uid = next(u for u in itertools.count(1)
               if rc.get_node_from_key(keys.replay(u)).name != fired)
    return symbol, uid


def crossings(matcher, symbol, times, start=0):
    """`times` crossings of 100, each firing a recurring `above 100` (it rearms below 99.5)."""
    fired = []
    for n in range(start, start + times):
        assert matcher.on_price(symbol, 99, T0 + 2 * n) == []
        nids = matcher.on_price(symbol, 101, T0 + 2 * n + 1)
        assert len(nids) == 1
        fired += nids
    return fired


def sweep_later(rc, symbol):
    Outbox(rc).sweep([symbol], now_ms=int(time.time() * 1000) + SWEEP_AGE_MS + 60_000)


def test_ticks_reach_users_while_the_slow_paths_master_is_paused_and_nothing_is_lost(rc):
    """tb:{fired}'s master takes no writes: each tick still reaches its user at once. The
    queue holds 2 batches; the rest wait in the outbox. Once writes are back, the queue is
    handed on and the sweep finishes the rest: every batch in the slow path once."""
    symbol, uid = away_from_fired(rc)
    arm(rc, symbol, uid, mode="recurring")
    fired_master = rc.get_node_from_key(keys.FIRED)
    matcher = Matcher(rc, hand_off_queue=2)
    rc.execute_command("CLIENT PAUSE", 60_000, "WRITE", target_nodes=fired_master)
    try:
        fired = crossings(matcher, symbol, 6)
        assert len(inbox(rc, uid)) == 6
        assert rc.xlen(keys.FIRED) == 0
    finally:
        rc.execute_command("CLIENT UNPAUSE", target_nodes=fired_master)
    matcher.close()
    assert 0 < rc.xlen(keys.outbox(symbol)) <= 6 - 2  # those the full queue left
    sweep_later(rc, symbol)
    assert sorted(nid for nid, *_ in slow_path_items(rc)) == sorted(fired)
    assert rc.xlen(keys.outbox(symbol)) == 0 and len(inbox(rc, uid)) == 6


def test_a_failed_hand_on_stops_no_tick_and_the_sweep_hands_it_on_once(rc):
    symbol, uid = away_from_fired(rc)
    arm(rc, symbol, uid, mode="recurring")
    matcher = Matcher(rc, hand_off_queue=100)
    rc.set(keys.FIRED_BATCHES, "x")  # COMMIT's ZADD fails with WRONGTYPE
    first = crossings(matcher, symbol, 1)
    matcher.close()
    rc.delete(keys.FIRED_BATCHES)
    assert rc.xlen(keys.outbox(symbol)) == 1 and slow_path_items(rc) == []
    matcher = Matcher(rc, hand_off_queue=100)
    second = crossings(matcher, symbol, 1, start=1)  # not held back by the batch before it
    matcher.close()
    assert [nid for nid, *_ in slow_path_items(rc)] == second
    sweep_later(rc, symbol)
    assert sorted(nid for nid, *_ in slow_path_items(rc)) == sorted(first + second)
    assert len(inbox(rc, uid)) == 2 and rc.xlen(keys.outbox(symbol)) == 0


def test_a_symbol_whose_last_alert_fired_leaves_the_registry_once_handed_on(rc):
    """The matcher keeps the symbol in tb:symbols while its batch waits in the outbox; the
    hand-off, once the batch is gone, lets it go (or the sweep would read it forever)."""
    symbol, uid = away_from_fired(rc)
    arm(rc, symbol, uid)
    matcher = Matcher(rc, hand_off_queue=100)
    assert len(matcher.on_price(symbol, 101, T0)) == 1
    matcher.close()
    assert rc.xlen(keys.outbox(symbol)) == 0 and len(slow_path_items(rc)) == 1
    assert symbol not in alert_index.registered(rc)
