"""The alert index on a real Redis Cluster: each symbol's index in its own slot, every script
in one slot, the registry (tb:symbols) and the alert -> symbol map kept right around them."""

import itertools
import threading
import time
from collections import Counter
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from webapp import keys
from webapp.accounts import service as accounts
from webapp.alerts import index as alert_index
from webapp.alerts import scripts
from webapp.alerts import service as alerts
from webapp.extensions import db, get_redis
from webapp.market import price_history
from worker.matcher import Matcher


@pytest.fixture
def ctx(make_app, rc, redis_cluster):
    """An app whose data plane is the session's cluster (emptied first by `rc`)."""
    nodes = [(host, int(port)) for host, port in (n.split(":") for n in redis_cluster.nodes)]
    app = make_app(REDIS_CLUSTER_NODES=nodes)
    with app.app_context():
        yield app


@pytest.fixture
def uid(ctx):
    return accounts.create_user("trader@example.com", "correct horse").id


def symbol_per_master(r, prefix="SL"):
    """One symbol whose slot each master owns, sorted."""
    found = {}
    for i in itertools.count():
        symbol = f"{prefix}{i}USDT"
        found.setdefault(r.get_node_from_key(keys.alerts(symbol)).name, symbol)
        if len(found) == len(r.get_primaries()):
            return sorted(found.values())


def make(uid, symbol, **fields):
    data = {"symbol": symbol, "type": "above", **fields}
    if not {"pct", "low"} & fields.keys():
        data.setdefault("price", 100)
    return alerts.create_alert(uid, data)


def where(alert_ids):
    """{alert id: the symbol tb:alerts:symbol names} of these alerts."""
    return dict(zip(alert_ids, get_redis().hmget(keys.ALERT_SYMBOLS, alert_ids), strict=True))


def index_keys(r, patterns=("tb:idx:*", "tb:rearm:*", "tb:alerts:{*", "tb:inuse:*")):
    return {k for pattern in patterns for k in r.scan_iter(pattern)}


def index_state(r):
    """Every index key with its content, the registry and the map, to compare two indexes."""
    state = {k: (r.zrange(k, 0, -1, withscores=True) if r.type(k) == "zset" else r.hgetall(k))
             for k in index_keys(r)}
    return state, r.hgetall(keys.SYMBOLS), r.hgetall(keys.ALERT_SYMBOLS)


def test_alerts_on_every_master_are_indexed_edited_and_removed_in_their_own_slots(ctx, uid):
    r = get_redis()
    symbols = symbol_per_master(r)
    made = {symbol: make(uid, symbol, mode="recurring", buffer="1%") for symbol in symbols}
    extra = make(uid, symbols[0], price=90, type="below")
    assert alert_index.symbols() == {symbols[0]: 2, symbols[1]: 1, symbols[2]: 1}
    assert where([a.id for a in made.values()]) == {a.id: s for s, a in made.items()}
    alerts.update_alert(uid, made[symbols[1]].id, {"price": 120})
    assert r.zscore(keys.index(symbols[1], "above"), made[symbols[1]].id) == 120
    alerts.set_active(uid, made[symbols[2]].id, False)
    assert alert_index.symbols() == {symbols[0]: 2, symbols[1]: 1}
    assert not r.exists(*(k for k in alert_index.symbol_keys(symbols[2])
                          if k != keys.alerts_version(symbols[2])))
    alerts.set_active(uid, made[symbols[2]].id, True)
    assert alert_index.symbols() == {symbols[0]: 2, symbols[1]: 1, symbols[2]: 1}
    alerts.delete_alert(uid, extra.id)
    alerts.delete_alert(uid, made[symbols[0]].id)
    assert alert_index.symbols() == {symbols[1]: 1, symbols[2]: 1}
    assert where([extra.id, made[symbols[0]].id]) == {extra.id: None, made[symbols[0]].id: None}


def test_an_edit_that_moves_an_alert_to_another_symbol_moves_it_between_slots(ctx, uid):
    r = get_redis()
    first, second, _ = symbol_per_master(r)
    moving, staying = make(uid, first), make(uid, first, price=200)
    alerts.update_alert(uid, moving.id, {"symbol": second})
    assert alert_index.symbols() == {first: 1, second: 1}
    assert where([moving.id, staying.id]) == {moving.id: second, staying.id: first}
    assert r.hkeys(keys.alerts(first)) == [str(staying.id)]
    assert r.zrange(keys.index(second, "above"), 0, -1) == [str(moving.id)]
    alerts.update_alert(uid, staying.id, {"symbol": second})
    assert alert_index.symbols() == {second: 2}
    assert not r.exists(keys.alerts(first), keys.index(first, "above"))
    alerts.update_alert(uid, moving.id, {"symbol": first})  # and back
    assert alert_index.symbols() == {first: 1, second: 1}
    assert where([moving.id]) == {moving.id: first}


@pytest.mark.both_databases
def test_rebuild_after_a_flush_restores_every_slot_the_registry_and_the_map(ctx, uid):
    r = get_redis()
    symbols = symbol_per_master(r)
    for i, symbol in enumerate(symbols):
        make(uid, symbol, price=100 + i)
        make(uid, symbol, type="crossing_up", price=50, mode="recurring")
    make(uid, symbols[0], type="pct_up", pct=2, window="5m")
    alerts.set_active(uid, make(uid, symbols[1], price=7).id, False)
    before = index_state(r)
    r.flushall()
    assert alert_index.rebuild() == 7
    assert index_state(r) == before
    assert alert_index.rebuild() == 7  # idempotent
    assert index_state(r) == before


def test_rebuild_rewrites_missing_and_stale_map_entries_but_not_an_alert_moved_since(ctx, uid):
    r = get_redis()
    first, second, third = symbol_per_master(r)
    lost, stale, moved = make(uid, first), make(uid, first, price=200), make(uid, second)
    r.hdel(keys.ALERT_SYMBOLS, lost.id)
    r.hset(keys.ALERT_SYMBOLS, stale.id, third)  # names a symbol that does not hold it
    r.hset(keys.alerts(third), moved.id, r.hget(keys.alerts(second), moved.id))
    r.hset(keys.ALERT_SYMBOLS, moved.id, third)  # as if it moved there after SQL was read
    alert_index.rebuild()
    assert where([lost.id, stale.id, moved.id]) == {lost.id: first, stale.id: first,
                                                   moved.id: third}


@pytest.mark.both_databases
def test_a_rebuild_racing_an_index_change_retries_only_that_symbol(ctx, uid):
    r = get_redis()
    symbols = symbol_per_master(r)
    racing = symbols[1]
    for symbol in symbols:
        make(uid, symbol)
    alert_index.rebuild()  # every node knows the scripts: no NOSCRIPT in what is counted
    late = []

    def meanwhile(conn, cursor, statement, *_):
        # SQL's live alerts were just read: an alert arrives on one symbol before the index
        # is written, so that symbol's rebuild must not drop it
        if "expires_at" in statement and not late and threading.current_thread() is main:
            late.append(None)
            worker = threading.Thread(target=create_elsewhere)
            worker.start()
            worker.join(timeout=30)

    def create_elsewhere():
        with ctx.app_context():
            late[0] = make(uid, racing, price=300).id

    main = threading.current_thread()
    event.listen(db.engine, "after_cursor_execute", meanwhile)
    try:
        with slowlog(r) as calls:
            assert alert_index.rebuild() == 4
    finally:
        event.remove(db.engine, "after_cursor_execute", meanwhile)
    assert r.zscore(keys.index(racing, "above"), late[0]) == 300
    assert alert_index.symbols() == {symbols[0]: 1, racing: 2, symbols[2]: 1}
    assert where([late[0]]) == {late[0]: racing}
    rebuilt = Counter(key for sha, key in calls if sha == sha_of(r, scripts.REBUILD))
    assert rebuilt == {keys.alerts(symbols[0]): 1, keys.alerts(racing): 2,
                       keys.alerts(symbols[2]): 1}


def sha_of(r, lua):
    return r.register_script(lua).sha


@contextmanager
def slowlog(r):
    """Every EVALSHA the masters run meanwhile, as (sha, first key): each one's slow log is
    set to record every command, then put back."""
    primaries, seen = r.get_primaries(), []
    saved = r.config_get("slowlog-*", target_nodes=primaries[0])
    r.config_set("slowlog-max-len", 10_000, target_nodes=primaries)
    r.config_set("slowlog-log-slower-than", 0, target_nodes=primaries)
    r.slowlog_reset(target_nodes=primaries)
    try:
        yield seen
    finally:
        for name, value in saved.items():
            r.config_set(name, value, target_nodes=primaries)
    for node in primaries:
        for entry in r.slowlog_get(10_000, target_nodes=node):
            args = entry["command"].decode().split()  # bytes, even when decoding
            if args[0].upper() == "EVALSHA":
                seen.append((args[1], args[3]))


def test_every_index_script_runs_in_its_symbols_slot_only(ctx, uid):
    """A script touching two slots would be refused (CROSSSLOT); and every key the scripts
    write is one they were given (index.symbol_keys)."""
    r = get_redis()
    symbols = symbol_per_master(r)
    made = [make(uid, s, type=kind, price=100, mode=mode, cooldown_s=cooldown)
            for s in symbols
            for kind, mode, cooldown in (("above", "once", 0), ("crossing", "recurring", 60),
                                         ("volume_above", "recurring", 0))]
    made += [make(uid, s, type="channel_exit", low=90, high=110, mode="recurring")
             for s in symbols]
    made += [make(uid, s, type="pct_down", pct=3, window="1h", mode="recurring")
             for s in symbols]
    fired = {s: Matcher(r).on_price(s, 101, int(time.time() * 1000)) for s in symbols}
    assert all(fired.values())
    alerts.update_alert(uid, made[1].id, {"buffer": 2})  # keeps its phase
    alerts.update_alert(uid, made[2].id, {"price": 200, "symbol": symbols[1]})
    alerts.set_active(uid, made[0].id, True)  # resumes a fired one-shot
    alert_index.forget_fired(symbols[1], [made[3].id])
    assert alert_index.rebuild() > 0
    alert_index.unindex_many([a.id for a in made[:9]])
    declared = {k for s in symbols for k in alert_index.symbol_keys(s)}
    written = index_keys(r, ("tb:idx:*", "tb:rearm:*", "tb:alerts:{*", "tb:alerts:fired:*",
                             "tb:alerts:version:*", "tb:inuse:*"))
    assert written and written - declared == set()


def test_price_samples_are_taken_from_every_master(ctx, uid):
    r = get_redis()
    symbols = symbol_per_master(r, "PH")
    for i, symbol in enumerate(symbols):
        make(uid, symbol)
        r.hset(keys.price(symbol), mapping={"price": 10 + i, "ts": 1_000 + i})
    assert price_history.sample(now_ms=5_000) == 3
    assert [price_history.price_at(s, 2_000) for s in symbols] == [10.0, 11.0, 12.0]
