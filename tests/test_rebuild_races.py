"""The slow path and the index rebuild as a starting listener meets them: a backlog still
being settled, other shards firing through a storm, Redis gone mid-batch."""

import threading

import pytest
from sqlalchemy import event as sql_event

from devtools import redisd
from tests.test_alerts import make, now_ms
from webapp import keys
from webapp.accounts import service as accounts
from webapp.alerts import index as alert_index
from webapp.extensions import db, get_redis
from worker import slowpath
from worker.matcher import Matcher


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield app


@pytest.fixture
def uid(auth):
    return auth.create()


def test_settling_before_a_rebuild_stops_at_what_had_fired_when_it_began(ctx, uid):
    """A starting listener settles what fired before it; other shards firing meanwhile (here
    one more alert each round) are left to their usual consumers, not chased for ever."""
    for price in (100, 101, 102, 103):
        make(uid, price=price)
    matcher = Matcher(get_redis())
    matcher.on_price("BTCUSDT", 100, now_ms())
    climb = iter((101, 102, 103))
    beats = []

    def other_shards_fire():
        beats.append(matcher.on_price("BTCUSDT", next(climb), now_ms()))

    assert slowpath.settle(beat=other_shards_fire) == 1
    assert len(beats) == 1 and get_redis().xlen(keys.FIRED) == 1  # left for the slow path
    assert slowpath.drain("test") == 1


def test_the_slow_path_meeting_a_redis_outage_says_so_once_and_keeps_the_rest(make_app,
                                                                              tmp_path, caplog):
    """Redis gone mid-batch (a master failing over): one warning, no traceback per entry,
    and every entry left pending for the retry."""
    process, url = redisd.start(tmp_path / "redis", port=redisd.free_port(), appendonly=False)
    app = make_app(REDIS_URL=url)
    try:
        with app.app_context():
            uid = accounts.create_user("outage@example.com", "long password").id
            for price in (100, 101):
                make(uid, price=price)
            Matcher(get_redis()).on_price("BTCUSDT", 100, now_ms())
            Matcher(get_redis()).on_price("BTCUSDT", 101, now_ms())
            slowpath.ensure_group(get_redis())
            [(_, entries)] = get_redis().xreadgroup("slow", "c", {keys.FIRED: ">"}, count=10)
            assert len(entries) == 2
            redisd.stop(process)
            with caplog.at_level("WARNING", logger="worker.slowpath"):
                assert slowpath.handle(get_redis(), entries) == 0
    finally:
        redisd.stop(process)
    said = [r for r in caplog.records if r.name == "worker.slowpath"]
    assert [r.levelname for r in said] == ["WARNING"], [r.getMessage() for r in said]
    assert "waits for Redis" in said[0].getMessage() and said[0].exc_info is None


def test_a_rebuild_racing_a_storm_on_the_symbol_never_arms_a_settled_alert_again(ctx, uid):
    """Another listener shard settles the symbol's fired alerts through a storm while a
    starting one rebuilds: each SQL read is stale by the time its script runs. The symbol
    keeps its live index rather than one forced from a stale read, which armed an alert
    settled meanwhile, so it fired twice."""
    fired, waiting = make(uid, price=100), make(uid, price=200)
    r = get_redis()
    assert Matcher(r).on_price("BTCUSDT", 150, now_ms())  # fired: SQL still says active
    reads = []

    def storm_meanwhile(conn, cursor, statement, *_):
        if "expires_at" not in statement or threading.current_thread() is not main:
            return
        reads.append(None)
        r.incr(keys.alerts_version("BTCUSDT"))  # the storm changes the symbol every moment
        if len(reads) == 6:  # just after the last read, the slow path settles the fired one
            settler = threading.Thread(target=settle_elsewhere)
            settler.start()
            settler.join(timeout=30)

    def settle_elsewhere():
        with ctx.app_context():
            assert slowpath.drain("other-shard") == 1

    main = threading.current_thread()
    sql_event.listen(db.engine, "after_cursor_execute", storm_meanwhile)
    try:
        alert_index.rebuild()
    finally:
        sql_event.remove(db.engine, "after_cursor_execute", storm_meanwhile)
    assert len(reads) == 6
    assert r.zscore(keys.index("BTCUSDT", "above"), fired.id) is None
    assert r.zscore(keys.index("BTCUSDT", "above"), waiting.id) == 200
    assert Matcher(r).on_price("BTCUSDT", 150, now_ms()) == []  # not notified twice


def test_settling_stops_at_its_time_budget_and_leaves_the_rest_to_the_slow_path(ctx, uid):
    matcher = Matcher(get_redis())
    for step in range(slowpath.DEFAULT_COUNT + 5):  # an entry a tick, more than one read
        make(uid, price=100 + step)
        matcher.on_price("BTCUSDT", 100 + step, now_ms())
    assert slowpath.settle(budget_s=0) == slowpath.DEFAULT_COUNT  # one round, then out
    assert get_redis().xlen(keys.FIRED) == 5
    assert slowpath.settle() == 5


def test_an_alert_that_fires_as_it_is_created_is_notified_once_through_a_rebuild(ctx, uid):
    """A new one-shot alert already past its target fires on the next trade, which may come
    while its POST is still saving. The slow path must find it in SQL: taken for deleted,
    its fired mark was dropped, SQL kept it active, and the next rebuild (a listener
    restart, `flask alerts reindex`) armed it again, so it was notified twice (a drill: 3 of
    3,000)."""
    r, notified = get_redis(), []

    def tick_and_settle():
        notified.extend(Matcher(r).on_price("BTCUSDT", 150, now_ms()))
        slowpath.drain("test")

    def a_trade_comes_meanwhile(session):  # as the create commits, from another process
        def elsewhere():
            with ctx.app_context():
                tick_and_settle()

        trade = threading.Thread(target=elsewhere)
        trade.start()
        trade.join(timeout=30)

    sql_event.listen(db.session(), "before_commit", a_trade_comes_meanwhile, once=True)
    alert = make(uid, price=100, mode="once")
    tick_and_settle()
    assert len(notified) == 1
    alert_index.rebuild()
    tick_and_settle()
    assert len(notified) == 1
    db.session.expire_all()
    assert alert.active is False and alert.last_fired_price == 150
