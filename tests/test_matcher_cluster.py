"""The matcher on a real Redis Cluster: each tick's atomic step in its symbol's slot, each
notified user's side in the user's slot (worker/outbox.py), every crossing exactly once."""

import itertools
import json
import threading
import time

import pytest
from redis.exceptions import ResponseError

from webapp import keys
from webapp.alerts import index as alert_index
from webapp.live.fanout import Message
from webapp.models import Alert
from worker.matcher import OUTBOX, Matcher
from worker.outbox import Outbox

T0 = int(time.time() * 1000)
USERS = range(1, 31)
_ids = itertools.count(1)


def symbol_per_master(rc):
    """One symbol whose slot each master owns."""
    found = {}
    for base in itertools.product("ABCDEFGHIJKLMNOPQRSTUVWXYZ", repeat=3):
        symbol = "".join(base) + "USDT"
        found.setdefault(rc.get_node_from_key(keys.alerts(symbol)).name, symbol)
        if len(found) == len(rc.get_primaries()):
            return sorted(found.values())
    raise AssertionError("no symbol for some master")


def arm(rc, symbol, user_id, target=100.0, mode="once"):
    alert = Alert(id=next(_ids), user_id=user_id, symbol=symbol, condition="above",
                  target=target, mode=mode, buffer=0.5, buffer_is_pct=False, note="",
                  active=True)
    alert_index.index(alert, rc)
    return alert


def inbox(rc, uid):
    return [(eid, json.loads(f["data"])) for eid, f in rc.xrange(keys.replay(uid))]


def slow_path_items(rc):
    return [item.split(":") for _, f in rc.xrange(keys.FIRED) for item in f["items"].split(",")]


def test_alerts_on_every_master_fire_once_into_each_users_own_slot(rc):
    symbols = symbol_per_master(rc)
    armed = {(s, uid): arm(rc, s, uid).id for s in symbols for uid in USERS}
    matcher = Matcher(rc)
    assert matcher.mode == OUTBOX
    fired = {s: matcher.on_price(s, 101, T0) for s in symbols}
    assert all(len(nids) == len(USERS) for nids in fired.values())
    for uid in USERS:
        got = inbox(rc, uid)
        assert sorted(n["data"]["symbol"] for _, n in got) == symbols
        assert {f"{eid}-{uid}" for eid, _ in got} <= {n for ns in fired.values() for n in ns}
    items = slow_path_items(rc)
    assert sorted(nid for nid, *_ in items) == sorted(n for ns in fired.values() for n in ns)
    assert {(a, u) for _, a, u, _ in items} == {(str(i), str(u)) for (_, u), i in armed.items()}
    assert all(rc.xlen(keys.outbox(s)) == 0 for s in symbols)
    assert alert_index.symbols(rc) == {}  # one-shot alerts left the index and the registry
    assert all(matcher.on_price(s, 102, T0 + 1) == [] for s in symbols)


def test_the_user_hears_it_on_the_sharded_channel_of_the_users_slot(rc):
    [symbol, *_] = symbol_per_master(rc)
    arm(rc, symbol, 7)
    pubsub = rc.pubsub()
    pubsub.ssubscribe(keys.user_channel(7))
    assert pubsub.get_sharded_message(timeout=2)["type"] == "ssubscribe"
    [nid] = Matcher(rc).on_price(symbol, 100, T0)
    message = pubsub.get_sharded_message(timeout=2)
    assert message["channel"] == keys.user_channel(7)
    assert Message.parse(message["data"]).data["id"] == nid  # as the hub reads it
    pubsub.close()


def test_two_listeners_on_one_feed_fire_each_crossing_once(rc, redis_cluster):
    from tests.cluster import data_plane

    symbols = symbol_per_master(rc)
    for s in symbols:
        for uid in USERS:
            arm(rc, s, uid, mode="recurring")
    prices = [101, 99, 101, 99, 101]  # three crossings up, each re-armed on the way down
    fired = []

    def listen():
        client = data_plane(redis_cluster)
        matcher = Matcher(client)
        for i, price in enumerate(prices):
            for s in symbols:
                fired.extend(matcher.on_price(s, price, T0 + 10 * i, seq=i + 1))
        client.close()

    threads = [threading.Thread(target=listen) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(fired) == len(set(fired)) == 3 * len(symbols) * len(USERS)
    assert all(len(inbox(rc, uid)) == 3 * len(symbols) for uid in USERS)
    assert len(slow_path_items(rc)) == len(fired)


def first_step_only(rc, symbol, price, ts):
    """What a listener killed between the two steps leaves: the symbol's step, no users' side."""
    matcher = Matcher(rc)
    args = [symbol, "price", str(price), ts, 2000, 0, 0, *matcher._tail]
    more, left, *batch = matcher._script(keys=matcher._keys(symbol, "price"), args=args)
    return batch or None


def test_a_batch_a_dead_listener_left_is_finished_once_by_racing_sweeps(rc):
    [symbol, *_] = symbol_per_master(rc)
    for uid in USERS:
        arm(rc, symbol, uid)
    first_step_only(rc, symbol, 101, T0)
    assert rc.xlen(keys.outbox(symbol)) == 1 and all(inbox(rc, u) == [] for u in USERS)
    later = int(time.time() * 1000) + 60_000  # the outbox ids are the server's clock, now
    sweeps = [threading.Thread(target=Outbox(rc).sweep, args=([symbol], later)) for _ in range(3)]
    for t in sweeps:
        t.start()
    for t in sweeps:
        t.join(30)
    assert all(len(inbox(rc, u)) == 1 for u in USERS)
    assert len(slow_path_items(rc)) == len(USERS)
    assert rc.xlen(keys.outbox(symbol)) == 0
    assert Outbox(rc).sweep([symbol], later) == 0


def test_completing_a_batch_again_changes_nothing(rc):
    [symbol, *_] = symbol_per_master(rc)
    for uid in USERS:
        arm(rc, symbol, uid)
    entry_id, notes = first_step_only(rc, symbol, 101, T0)
    outbox = Outbox(rc)
    first = outbox.complete(symbol, entry_id, "101", T0, notes)
    again = outbox.complete(symbol, entry_id, "101", T0, notes)  # a lost reply, retried
    assert first == again and len(set(first)) == len(USERS)
    assert all(len(inbox(rc, u)) == 1 for u in USERS)
    assert sorted(nid for nid, *_ in slow_path_items(rc)) == sorted(first)


def test_a_users_batches_are_remembered_a_day_and_found_however_many(rc):
    """tb:applied:{uid} holds every batch of the day (a retry of the first answers the same
    ids after 300 more) and forgets, on the next write, one from before the day."""
    [symbol, *_] = symbol_per_master(rc)
    arm(rc, symbol, 1, mode="recurring")
    outbox, first = Outbox(rc), None
    for n in range(0, 602, 2):  # the alert rearms below 99.5
        assert first_step_only(rc, symbol, 99, T0 + n) is None
        entry_id, notes = first_step_only(rc, symbol, 101, T0 + n + 1)
        nids = outbox.complete(symbol, entry_id, "101", T0 + n + 1, notes)
        first = first or (entry_id, notes, nids)
    assert rc.zcard(keys.applied(1)) == len(inbox(rc, 1)) == 301
    entry_id, notes, nids = first
    assert outbox.complete(symbol, entry_id, "101", T0, notes) == nids
    assert rc.xlen(keys.replay(1)) == rc.zcard(keys.applied(1))
    two_days_ago = int(time.time() * 1000) - 2 * 24 * 3600 * 1000
    rc.zadd(keys.applied(1), {f"{two_days_ago}-0:{symbol}=1-0": two_days_ago})
    first_step_only(rc, symbol, 99, T0 + 1000)
    entry_id, notes = first_step_only(rc, symbol, 101, T0 + 1001)
    outbox.complete(symbol, entry_id, "101", T0 + 1001, notes)
    assert rc.zcount(keys.applied(1), "-inf", two_days_ago) == 0


def test_a_batch_remembered_in_the_old_hash_is_not_written_twice(rc):
    """Before December 2026 tb:applied:{uid} was a hash (batch -> ids): a batch finished
    then and retried after the upgrade answers its ids, and the hash becomes a sorted set."""
    [symbol, *_] = symbol_per_master(rc)
    arm(rc, symbol, 1)
    entry_id, notes = first_step_only(rc, symbol, 101, T0)
    nids = Outbox(rc).complete(symbol, entry_id, "101", T0, notes)
    [member] = rc.zrange(keys.applied(1), 0, -1)
    batch, ids = member.split("=")
    rc.delete(keys.applied(1))
    rc.hset(keys.applied(1), batch, ids)
    assert Outbox(rc).complete(symbol, entry_id, "101", T0, notes) == nids
    assert len(inbox(rc, 1)) == 1 and rc.type(keys.applied(1)) == "zset"
    assert rc.pttl(keys.applied(1)) > 0  # still forgotten within the day


def test_a_users_step_on_a_key_of_another_type_fails_with_redis_own_error(rc):
    [symbol, *_] = symbol_per_master(rc)
    arm(rc, symbol, 1)
    entry_id, notes = first_step_only(rc, symbol, 101, T0)
    rc.set(keys.applied(1), "x")
    with pytest.raises(ResponseError, match="^WRONGTYPE"):
        Outbox(rc).complete(symbol, entry_id, "101", T0, notes)
    assert inbox(rc, 1) == []


def test_a_batch_whose_users_step_failed_is_counted_as_fired(rc):
    """Claimed and kept in the outbox for the sweep, it fired: /metrics counts it then, as
    the tick's retry does not return it (the drill's counts fell short after a failover)."""
    from prometheus_client import REGISTRY

    def counted():
        return REGISTRY.get_sample_value("tickerbell_alerts_fired_total",
                                         {"type": "PRICE_ALERT"}) or 0.0

    [symbol, *_] = symbol_per_master(rc)
    arm(rc, symbol, 1)
    arm(rc, symbol, 2)
    rc.set(keys.applied(2), "x")  # the user's step fails there, with Redis's own error
    before = counted()
    with pytest.raises(ResponseError):
        Matcher(rc, mode=OUTBOX).on_price(symbol, 101, T0)
    assert counted() - before == 2
