"""Alerts: the domain, the Redis index and its rebuild, the CLI and the slow path (the page:
test_alerts_page.py)."""

import threading
import time
from datetime import timedelta

import pytest
import redis

from webapp import keys
from webapp.alerts import index as alert_index
from webapp.alerts import service as alerts
from webapp.exceptions import InvalidInput, NotFound
from webapp.extensions import db, get_redis
from webapp.inbox import service as inbox
from webapp.models import Alert, utcnow
from worker import slowpath
from worker.matcher import Matcher


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield app


@pytest.fixture
def uid(auth):
    return auth.create()


def make(uid, **fields):
    return alerts.create_alert(uid, {"symbol": "BTCUSDT", "type": "above", "price": 100,
                                     **fields})


def now_ms():
    return int(time.time() * 1000)


def index_state(r):
    """Every index key with its members and scores, to compare two indexes."""
    names = sorted(r.scan_iter("tb:idx:*")) + sorted(r.scan_iter("tb:rearm:*"))
    state = {k: r.zrange(k, 0, -1, withscores=True) for k in names}
    state["alerts"] = {k: r.hgetall(k) for k in r.scan_iter("tb:alerts:{*")}
    state["symbols"] = r.hgetall("tb:symbols")
    return state


@pytest.mark.both_databases
def test_create_writes_sql_and_index(ctx, uid):
    alert = make(uid, mode="recurring", buffer="1%", note="hi")
    r = get_redis()
    assert r.zscore(keys.index("BTCUSDT", "above"), alert.id) == 100
    row = alert_index.unpack_row(r.hget(keys.alerts("BTCUSDT"), alert.id))
    assert row["rearm"] == "99" and row["note"] == "hi" and row["symbol"] == "BTCUSDT"
    assert alert_index.symbols() == {"BTCUSDT": 1}
    assert db.session.get(Alert, alert.id).buffer_is_pct


@pytest.mark.both_databases
def test_pause_resume_delete_keep_index_and_refcount(ctx, uid):
    a, b = make(uid), make(uid, type="below", price=90)
    assert alert_index.symbols() == {"BTCUSDT": 2}
    alerts.set_active(uid, a.id, False)
    assert alert_index.symbols() == {"BTCUSDT": 1}
    assert get_redis().zscore(keys.index("BTCUSDT", "above"), a.id) is None
    alerts.set_active(uid, a.id, False)  # twice is harmless
    alerts.set_active(uid, a.id, True)
    assert alert_index.symbols() == {"BTCUSDT": 2}
    alerts.delete_alert(uid, a.id)
    alerts.delete_alert(uid, b.id)
    assert alert_index.symbols() == {}
    assert db.session.scalar(db.select(db.func.count(Alert.id))) == 0


def test_other_users_alert_is_not_found(ctx, uid, auth):
    alert = make(uid)
    other = auth.create("other@example.com")
    for action in (lambda: alerts.set_active(other, alert.id, False),
                   lambda: alerts.delete_alert(other, alert.id)):
        with pytest.raises(NotFound):
            action()
    assert alert_index.symbols() == {"BTCUSDT": 1}


def test_form_text_numbers_are_accepted_only_when_asked(ctx, uid):
    with pytest.raises(InvalidInput):
        make(uid, price="100")
    assert alerts.create_alert(uid, {"symbol": "btcusdt", "type": "above", "price": "100.5",
                                     "buffer": "0.25", "expires_at": ""},
                               text_numbers=True).target == 100.5


@pytest.mark.both_databases
def test_expire_due_deactivates_and_unindexes(ctx, uid):
    alert = make(uid, expires_at=(utcnow() + timedelta(minutes=1)).isoformat())
    assert alerts.expire_due(utcnow()) == 0
    assert alerts.expire_due(utcnow() + timedelta(minutes=2)) == 1
    assert not db.session.get(Alert, alert.id).active
    assert alert_index.symbols() == {}


@pytest.mark.both_databases
def test_flushall_then_rebuild_gives_the_same_index(ctx, uid):
    make(uid)
    make(uid, type="below", price=90, mode="recurring")
    make(uid, symbol="ETHUSDT", type="volume_above", price=5000)
    alerts.set_active(uid, make(uid, price=7).id, False)
    r = get_redis()
    before = index_state(r)
    r.flushall()
    assert alert_index.rebuild() == 3
    assert index_state(r) == before
    assert alert_index.rebuild() == 3  # idempotent
    assert index_state(r) == before


def test_flushall_then_rebuild_matches_the_same(ctx, uid):
    alert = make(uid, price=100)
    get_redis().flushall()
    alert_index.rebuild()
    matcher = Matcher(get_redis())
    assert matcher.on_price("BTCUSDT", 99, now_ms()) == []
    [nid] = matcher.on_price("BTCUSDT", 100, now_ms())
    assert inbox.get(uid, nid)["alert_id"] == str(alert.id)


def test_rebuild_keeps_a_fired_recurring_alert_waiting(ctx, uid):
    alert = make(uid, mode="recurring")
    matcher = Matcher(get_redis())
    assert len(matcher.on_price("BTCUSDT", 101, now_ms())) == 1
    alert_index.rebuild()  # Redis intact: the phase is read from it
    assert matcher.on_price("BTCUSDT", 101, now_ms()) == []
    slowpath.drain("test")  # records last_fired_price, which a wiped Redis falls back on
    get_redis().flushall()
    alert_index.rebuild()
    assert get_redis().zscore(keys.rearm("BTCUSDT", "above"), alert.id) == 99.5
    assert matcher.on_price("BTCUSDT", 101, now_ms()) == []
    assert matcher.on_price("BTCUSDT", 99, now_ms()) == []
    assert len(matcher.on_price("BTCUSDT", 100, now_ms())) == 1


@pytest.mark.both_databases
def test_a_fired_one_shot_is_not_rearmed_by_a_rebuild_before_the_slow_path(ctx, uid):
    fired, armed = make(uid), make(uid, price=200)
    r, matcher = get_redis(), Matcher(get_redis())
    assert len(matcher.on_price("BTCUSDT", 100, now_ms())) == 1
    assert alert_index.rebuild() == 1  # SQL still says active: the fired marker wins
    assert matcher.on_price("BTCUSDT", 101, now_ms()) == []
    assert alert_index.symbols() == {"BTCUSDT": 1}
    assert r.hexists(keys.alerts_fired("BTCUSDT"), fired.id)
    assert slowpath.drain("test") == 1
    assert not r.hexists(keys.alerts("BTCUSDT"), fired.id)
    assert r.hexists(keys.alerts("BTCUSDT"), armed.id)
    assert not r.exists(keys.alerts_fired("BTCUSDT")) and alert_index.symbols() == {"BTCUSDT": 1}
    assert alert_index.rebuild() == 1
    assert r.zrange(keys.index("BTCUSDT", "above"), 0, -1) == [str(armed.id)]
    assert alert_index.symbols() == {"BTCUSDT": 1}


def test_a_slow_path_retry_after_its_commit_finishes_unindexing_the_fired_one_shot(ctx, uid):
    """The first try committed, then lost Redis (a failover) before unindexing: its retry
    finds the alert already inactive and must still drop what the index holds of it."""
    alert, r = make(uid), get_redis()
    Matcher(r).on_price("BTCUSDT", 100, now_ms())
    db.session.get(Alert, alert.id).active = False  # the first try's commit
    db.session.commit()
    assert slowpath.drain("test") == 1
    assert not r.hexists(keys.ALERT_SYMBOLS, alert.id)
    assert not r.exists(keys.alerts_fired("BTCUSDT")) and alert_index.symbols() == {}


def test_a_one_shot_deleted_before_the_slow_path_leaves_nothing_behind(ctx, uid):
    alert = make(uid)
    Matcher(get_redis()).on_price("BTCUSDT", 100, now_ms())
    alerts.delete_alert(uid, alert.id)
    assert slowpath.drain("test") == 1
    assert not get_redis().exists(keys.alerts_fired("BTCUSDT")) and alert_index.symbols() == {}


def test_a_one_shot_paused_and_resumed_after_firing_is_armed_by_a_rebuild(ctx, uid):
    alert = make(uid)
    Matcher(get_redis()).on_price("BTCUSDT", 100, now_ms())
    alerts.set_active(uid, alert.id, False)
    alerts.set_active(uid, alert.id, True)  # SQL's word replaces the matcher's mark
    assert alert_index.rebuild() == 1
    assert get_redis().zscore(keys.index("BTCUSDT", "above"), alert.id) == 100


def test_flushall_after_a_fire_rebuilds_without_the_fired_one_shot(ctx, uid):
    make(uid)
    armed = make(uid, price=200, mode="recurring")
    Matcher(get_redis()).on_price("BTCUSDT", 100, now_ms())
    slowpath.drain("test")
    get_redis().flushall()
    assert alert_index.rebuild() == 1
    assert get_redis().zrange(keys.index("BTCUSDT", "above"), 0, -1) == [str(armed.id)]
    assert alert_index.symbols() == {"BTCUSDT": 1}
    assert len(Matcher(get_redis()).on_price("BTCUSDT", 200, now_ms())) == 1


def test_rebuild_while_ticks_fire_keeps_the_index_consistent(ctx, uid, redis_url):
    alert = make(uid, mode="recurring")
    stop, fired = threading.Event(), []

    def tick():
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        matcher, highs = Matcher(client), 0
        while not stop.is_set() or highs < 20:
            highs += 1
            matcher.on_price("BTCUSDT", 99, now_ms())
            fired.extend(matcher.on_price("BTCUSDT", 101, now_ms()))
        fired.append(highs)
        client.close()

    thread = threading.Thread(target=tick)
    thread.start()
    for _ in range(20):
        alert_index.rebuild()
    stop.set()
    thread.join(timeout=30)
    highs = fired.pop()
    assert len(fired) == highs  # every 99 -> 101 swing fired exactly once
    r = get_redis()
    sets = (keys.index("BTCUSDT", "above"), keys.rearm("BTCUSDT", "above"))
    members = [r.zscore(k, alert.id) for k in sets]
    assert sum(m is not None for m in members) == 1
    assert alert_index.symbols() == {"BTCUSDT": 1}


def test_rebuild_drops_stale_entries(ctx, uid):
    alert = make(uid)
    r = get_redis()
    r.zadd(keys.index("BTCUSDT", "above"), {"999": 1})
    r.hset(keys.alerts("BTCUSDT"), "999", alert_index.pack_row({
        "user_id": uid, "symbol": "BTCUSDT", "condition": "above", "target": 1, "mode": "once",
        "rearm": 1, "expires_at": 0, "note": ""}))
    r.hset("tb:symbols", "BTCUSDT", 5)
    alert_index.rebuild()
    assert r.zrange(keys.index("BTCUSDT", "above"), 0, -1) == [str(alert.id)]
    assert r.hkeys(keys.alerts("BTCUSDT")) == [str(alert.id)]
    assert alert_index.symbols() == {"BTCUSDT": 1}


@pytest.mark.both_databases
def test_slow_path_marks_one_shot_inactive_and_records_fires(ctx, uid):
    once, recurring = make(uid), make(uid, price=99, mode="recurring")
    fired = Matcher(get_redis()).on_price("BTCUSDT", 100.5, now_ms())
    assert len(fired) == 2
    assert slowpath.drain("test") == 2
    db.session.expire_all()
    once, recurring = db.session.get(Alert, once.id), db.session.get(Alert, recurring.id)
    assert not once.active and once.last_fired_price == 100.5
    assert recurring.active and recurring.last_fired_at is not None
    assert alerts.status(once) == "fired"
    assert get_redis().xlen(keys.FIRED) == 0 and slowpath.drain("test") == 0
    assert 0 < get_redis().pttl(keys.replay(uid)) <= inbox.DEFAULT_TTL_MS


def test_slow_path_reclaims_entries_a_dead_consumer_left(ctx, uid):
    alert = make(uid)
    Matcher(get_redis()).on_price("BTCUSDT", 100, now_ms())
    slowpath.ensure_group(get_redis())
    get_redis().xreadgroup("slow", "dead", {keys.FIRED: ">"}, count=10)  # read, never acked
    assert slowpath.drain("alive") == 0
    assert slowpath.reclaim("alive", min_idle_ms=0) == 1
    db.session.expire_all()
    assert not db.session.get(Alert, alert.id).active
    assert slowpath.reclaim("alive", min_idle_ms=0) == 0


def test_slow_path_parks_an_entry_that_keeps_failing(ctx):
    r = get_redis()
    slowpath.ensure_group(r)
    r.xadd(keys.FIRED, {"type": "PRICE_ALERT", "price": "1", "ts": "1", "items": "1:x:1:once"})
    assert slowpath.drain("c") == 0  # malformed: it fails and stays pending
    for _ in range(slowpath.MAX_DELIVERIES - 1):
        assert slowpath.reclaim("c", min_idle_ms=0) == 0
    assert slowpath.bury_poison() == 1
    assert r.xlen(keys.FIRED) == 0 and r.xlen(keys.FIRED_DEAD) == 1
    assert r.xpending(keys.FIRED, "slow")["pending"] == 0


def test_safety_net_drains_and_expires(ctx, uid):
    make(uid)
    Matcher(get_redis()).on_price("BTCUSDT", 100, now_ms())
    assert slowpath.safety_net() == {"handled": 1, "expired": 0}


def test_cli_reindex_and_list(ctx, runner, uid):
    make(uid, note="x")
    get_redis().flushall()
    result = runner.invoke(args=["alerts", "reindex"])
    assert result.exit_code == 0 and "indexed 1 alerts over 1 symbols" in result.output
    result = runner.invoke(args=["alerts", "list", "trader@example.com"])
    assert "BTCUSDT\tabove\t100\tonce\tactive" in result.output
    alerts.create_alert(uid, {"symbol": "ETHUSDT", "type": "pct_up", "pct": 3, "window": "1m"})
    listed = runner.invoke(args=["alerts", "list", "trader@example.com"]).output
    assert "\t3% in 1m\t" in listed, listed  # as the page and the API name the window


def test_cli_reindex_settles_the_slow_path_first(ctx, runner, uid):
    alert = make(uid)
    Matcher(get_redis()).on_price("BTCUSDT", 100, now_ms())
    result = runner.invoke(args=["alerts", "reindex"])
    assert result.exit_code == 0 and "indexed 0 alerts" in result.output
    assert "settled 1" in result.output
    db.session.expire_all()
    assert not db.session.get(Alert, alert.id).active
    r = get_redis()
    assert r.xlen(keys.FIRED) == 0 and not r.exists(keys.alerts_fired("BTCUSDT"))
