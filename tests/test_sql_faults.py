"""SQL and Redis faults during alert writes: 503 with Retry-After, SQL and the index agree.

The drill: SQLite locked by another connection, or its file read-only, while an alert is
created, paused or deleted; then the fault is lifted, the same request succeeds, and a fresh
alert fires.
"""

import json
import logging
import os
import sqlite3
import subprocess
import threading
import time
from contextlib import contextmanager

import pytest
import redis
import sqlalchemy
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.conftest import PG_URL, AuthActions, csrf_token, reset_postgres
from tests.hub import make_user, poll
from webapp import create_app, keys
from webapp.alerts import index as alert_index
from webapp.alerts import service as alerts
from webapp.errors import passes_by_itself
from webapp.extensions import db
from webapp.models import Alert, CriticalNotification
from webapp.notify import router
from worker import slowpath
from worker.matcher import Matcher

GOOD = {"symbol": "BTCUSDT", "type": "above", "price": 100}
_ticks = iter(range(1, 10**6))


@contextmanager
def locked(app):
    """Another connection holds SQLite's write lock until the block ends."""
    holder = sqlite3.connect(db_path(app), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@contextmanager
def read_only(app):
    """The database file refuses writes, to root too; the app reconnects meanwhile.

    chmod stops anyone but root; root ignores modes, but not the immutable attribute
    (chattr +i), which needs CAP_LINUX_IMMUTABLE and a filesystem that has it. SQLite then
    opens the file read-only, exactly as on a read-only mount or a file with the wrong owner.
    """
    path = db_path(app)
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", path], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip("!! cannot make a file read-only for root (chattr +i failed): "
                        "read-only drill SKIPPED")
    else:
        os.chmod(path, 0o444)
    with app.app_context():
        db.engine.dispose()  # connections already open keep writing: new ones see the fault
    try:
        yield
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", path], check=True)
        else:
            os.chmod(path, 0o644)


FAULTS = {"locked": locked, "read_only": read_only}


def db_path(app):
    return make_url(app.config["SQLALCHEMY_DATABASE_URI"]).database


@pytest.fixture
def site(make_app, r):
    """An app, a logged-in client and a used API key (its first use writes), one alert A."""
    app = make_app(SQLITE_BUSY_TIMEOUT_MS=50)
    client = app.test_client()
    auth = AuthActions(client, app)
    auth.create()
    auth.login()
    key = {"X-API-Key": auth.api_key()}
    alert = client.post("/api/v1/alerts", json=GOOD, headers=key).get_json()
    return {"app": app, "client": client, "key": key, "alert_id": alert["id"], "r": r}


def create(site):
    return site["client"].post("/api/v1/alerts", json={**GOOD, "price": 200}, headers=site["key"])


def pause(site):
    token = csrf_token(site["client"], "/alerts/")
    return site["client"].post(f"/alerts/{site['alert_id']}/pause",
                               headers={"HX-Request": "true", "X-CSRFToken": token})


def resume(site):
    token = csrf_token(site["client"], "/alerts/")
    return site["client"].post(f"/alerts/{site['alert_id']}/resume",
                               headers={"HX-Request": "true", "X-CSRFToken": token})


def delete(site):
    return site["client"].delete(f"/api/v1/alerts/{site['alert_id']}", headers=site["key"])


def sql_state(app):
    """Every alert's (id, active) in SQL."""
    with app.app_context():
        rows = db.session.execute(db.select(Alert.id, Alert.active).order_by(Alert.id)).all()
        db.session.remove()
    return [tuple(row) for row in rows]


def assert_agree(app, r):
    """The index holds exactly SQL's live alerts, each in its symbol's set at its target."""
    with app.app_context():
        live = {str(a.id): a for a in alert_index.live_alerts()}
        expected = {(alert_index.idx_key(a.symbol, a.condition), i, a.target)
                    for i, a in live.items()}
        db.session.remove()
    indexed = {(key, member, score) for key in r.scan_iter("tb:idx:*")
               for member, score in r.zrange(key, 0, -1, withscores=True)}
    rows = {i for key in r.scan_iter("tb:alerts:{*") for i in r.hkeys(key)}
    assert rows == set(live)
    assert indexed == expected


def fired_alert_ids(r, nids):
    """The alert ids of the notifications a tick fired (nid = '<entry id>-<uid>')."""
    ids = []
    for nid in nids:
        eid, uid = nid.rsplit("-", 1)
        [(_, fields)] = r.xrange(keys.replay(uid), eid, eid)
        ids.append(json.loads(fields["data"])["alert_id"])
    return ids


def tick(r, price):
    return Matcher(r).on_price("BTCUSDT", price, int(time.time() * 1000), next(_ticks))


def assert_503(response):
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    if response.is_json:
        assert response.get_json()["error"] == "service_unavailable"
        assert "database" in response.get_json()["detail"]


# What each request leaves in SQL (id, active) once it went through; A is alert 1.
DRILL = [(create, 201, [(1, True), (2, True)]), (pause, 200, [(1, False)]),
         (delete, 204, [])]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("request_, ok, after", DRILL, ids=["create", "pause", "delete"])
def test_a_write_during_a_sql_fault_answers_503_and_leaves_sql_and_index_agreeing(
        site, fault, request_, ok, after):
    app, r = site["app"], site["r"]
    before = sql_state(app)
    with FAULTS[fault](app):
        assert_503(request_(site))
        assert sql_state(app) == before
        assert_agree(app, r)
    response = request_(site)
    assert response.status_code == ok
    assert sql_state(app) == after
    assert_agree(app, r)
    fresh = create(site).get_json()["id"]
    live = [str(i) for i, active in sql_state(app) if active]
    assert str(fresh) in live
    assert sorted(fired_alert_ids(r, tick(r, 250))) == live


def test_reads_answer_while_another_connection_holds_the_write_lock(site):
    with site["app"].app_context():
        mode = db.session.execute(text("PRAGMA journal_mode")).scalar()
        db.session.remove()
    assert mode == "wal"
    with locked(site["app"]):
        listed = site["client"].get("/api/v1/alerts", headers=site["key"])
        assert listed.status_code == 200 and [a["id"] for a in listed.get_json()] == [1]
        page = site["client"].get("/alerts/")
        assert page.status_code == 200 and b"BTCUSDT" in page.data


def test_a_key_unused_for_a_minute_still_reads_while_the_database_is_locked(site):
    """Its last-used stamp is bookkeeping: the read answers even when the stamp cannot."""
    from datetime import timedelta

    from webapp.models import ApiKey, utcnow

    with site["app"].app_context():
        db.session.execute(db.update(ApiKey).values(last_used_at=utcnow() - timedelta(hours=1)))
        db.session.commit()
        db.session.remove()
    with locked(site["app"]):
        listed = site["client"].get("/api/v1/alerts", headers=site["key"])
    assert listed.status_code == 200


def test_a_page_write_during_a_sql_fault_gets_the_503_page(site):
    with locked(site["app"]):
        response = site["client"].post(f"/alerts/{site['alert_id']}/delete", data={
            "csrf_token": csrf_token(site["client"], "/alerts/")})
    assert_503(response)
    assert b"Temporarily unavailable" in response.data


def test_pages_and_api_answer_503_when_the_database_is_gone(site):
    path = db_path(site["app"])
    os.rename(path, path + ".away")  # SQLite opens an empty file in its place: no tables
    with site["app"].app_context():
        db.engine.dispose()
    page = site["client"].get("/alerts/")  # even the layout cannot load the user
    assert_503(page)
    assert b"Temporarily unavailable" in page.data
    assert_503(site["client"].get("/api/v1/alerts", headers=site["key"]))


# --- Redis faults: SQL is rolled back --------------------------------------------------------


@pytest.fixture
def no_redis(make_app, site, refused_port):
    """A second app on the same database whose Redis is gone."""
    return make_app(create_tables=False, REDIS_URL=f"redis://127.0.0.1:{refused_port}/0")


@pytest.mark.parametrize("call", [
    lambda uid, aid: alerts.create_alert(uid, GOOD),
    lambda uid, aid: alerts.set_active(uid, aid, False),
    lambda uid, aid: alerts.set_active(uid, aid, True),
    lambda uid, aid: alerts.delete_alert(uid, aid),
], ids=["create", "pause", "resume", "delete"])
def test_a_redis_fault_leaves_sql_as_it_was(site, no_redis, call):
    before = sql_state(site["app"])
    with no_redis.app_context():
        with pytest.raises(redis.ConnectionError):
            call(1, site["alert_id"])
        db.session.remove()
    assert sql_state(site["app"]) == before
    assert_agree(site["app"], site["r"])


def test_a_redis_fault_answers_503_with_retry_after(no_redis, site):
    client = no_redis.test_client()
    response = client.delete(f"/api/v1/alerts/{site['alert_id']}", headers=site["key"])
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
    assert response.get_json()["error"] == "service_unavailable"
    assert sql_state(site["app"]) == [(1, True)]


# --- a commit that fails after the index changed: the index change is undone ----------------

# A deferred check failing as a serialization failure would: at COMMIT, after the flush.
REFUSE_COMMIT = [
    "CREATE FUNCTION refuse_commit() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN RAISE EXCEPTION 'commit refused' USING ERRCODE = '40001'; END $$",
    "CREATE CONSTRAINT TRIGGER refuse_commit AFTER INSERT OR UPDATE OR DELETE ON alerts"
    " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_commit()",
]


@pytest.fixture
def pg_site(redis_url, r, tmp_path):
    """The app on PostgreSQL with alert A; PostgreSQL can refuse a commit after the flush."""
    if not PG_URL:
        pytest.skip("PostgreSQL: TEST_DATABASE_URL is not set")
    app = create_app({"TESTING": True, "SECRET_KEY": "test-secret", "REDIS_URL": redis_url,
                      "SQLALCHEMY_DATABASE_URI": PG_URL, "INSTANCE_PATH": str(tmp_path)})
    reset_postgres(app)
    with app.app_context():
        db.create_all()
    client = app.test_client()
    auth = AuthActions(client, app)
    auth.create()
    auth.login()
    key = {"X-API-Key": auth.api_key()}
    alert = client.post("/api/v1/alerts", json=GOOD, headers=key).get_json()
    yield {"app": app, "client": client, "key": key, "alert_id": alert["id"], "r": r}
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    app.extensions["redis"].close()


@pytest.mark.parametrize("first, request_", [
    (None, create), (None, pause), (pause, resume), (None, delete),
], ids=["create", "pause", "resume", "delete"])
def test_a_failed_commit_undoes_the_index_change(pg_site, first, request_):
    app, r = pg_site["app"], pg_site["r"]
    if first is not None:
        assert first(pg_site).status_code == 200
    with app.app_context():
        with db.engine.begin() as conn:
            for statement in REFUSE_COMMIT:
                conn.execute(text(statement))
    before = sql_state(app)
    assert_503(request_(pg_site))
    assert sql_state(app) == before
    assert_agree(app, r)


def test_a_fired_batch_that_met_a_locked_database_is_recorded_seconds_later(site, caplog):
    """The listener's slow-path thread tries a failed entry again once it has been pending
    a while, not after the safety net's minute (the re-drill: 120 notifications ~95 s late).
    The wait is a warning, not an ERROR with a traceback: nothing is wrong with the entry."""
    app, r = site["app"], site["r"]
    caplog.set_level(logging.WARNING, logger="worker.slowpath")
    stop = threading.Event()
    with locked(app):
        Matcher(r).on_price("BTCUSDT", 101, next(_ticks))  # fires alert A
        thread = threading.Thread(target=slowpath.run_forever, args=(stop, app, "t", 100, 300))
        thread.start()
        time.sleep(0.5)  # the first try meets the lock: the thing under test is what follows
    try:
        with app.app_context():
            assert poll(lambda: not db.session.get(Alert, site["alert_id"]).active
                        or db.session.rollback(), timeout=10)
            assert poll(lambda: r.xlen(keys.FIRED) == 0)  # routed, then acknowledged
    finally:
        stop.set()
        thread.join(10)
    said = [rec for rec in caplog.records if rec.name == "worker.slowpath"]
    assert any("waits for the database" in rec.getMessage() for rec in said), said
    assert all(rec.levelno < logging.ERROR and not rec.exc_info for rec in said), said


@pytest.mark.parametrize("said, waits", [
    ("database is locked", True), ("canceling statement due to lock timeout", True),
    ("server closed the connection unexpectedly", True), ("no such table: alerts", False),
    ("too many SQL variables", False),
    ('connection to server at "127.0.0.1", port 5432 failed: Connection refused', True),
    ('connection to server at "127.0.0.1", port 5432 failed: FATAL:  database "nosuchdb" '
     "does not exist", False),
    ('connection to server at "127.0.0.1", port 5432 failed: FATAL:  password '
     'authentication failed for user "tb"', False)])
def test_the_slow_path_waits_out_a_locked_database_but_reports_a_schema_s_fault(said, waits):
    """A wait is a warning and stops the pass; a missing table is an ERROR with its traceback
    and the next entries go on."""
    error = sqlalchemy.exc.OperationalError("UPDATE alerts ...", {}, Exception(said))
    assert passes_by_itself(error) is waits


def test_a_batch_that_meets_a_locked_database_warns_once_without_tracebacks(make_app, caplog):
    """It is retried, and passes once the lock does: an ERROR with a traceback for each of
    its notifications told an operator of a fault that needed no hand."""
    app = make_app(SQLITE_BUSY_TIMEOUT_MS=50)
    uid = make_user(app, "locked@example.com")
    batch = [{"id": str(n), "user_id": uid, "type": "RISK_VIOLATION", "priority": "critical",
              "title": f"limit {n}", "message": "", "data": {}, "created_at": 1796000000000}
             for n in (900001, 900002, 900003)]
    with app.app_context(), locked(app), pytest.raises(RuntimeError, match="900003"):
        router.process_batch(batch)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    [line] = [r for r in caplog.records if getattr(r, "event", None) == "route_process_waits"]
    assert line.levelname == "WARNING" and line.notifications == 3 and "locked" in line.error
    with app.app_context():
        router.process_batch(batch)  # the retry, the lock gone
        assert db.session.scalar(db.select(db.func.count(CriticalNotification.id))) == 3
