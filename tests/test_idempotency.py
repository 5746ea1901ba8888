"""Idempotency under races: a duplicate `Idempotency-Key` while the first request is in flight,
a request dying mid-way (its key freed), an over-long key, two scheduler runs for one digest.

The races are held open by a real PostgreSQL lock taken by another connection and released
only once the database shows the request waiting on it; SQLite readers never wait (WAL),
so the held races run on PostgreSQL only.
"""

import json
import os
import signal
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import redis

from devtools import redisd
from tests.conftest import PG_URL
from tests.hub import WAIT, make_user, poll, run_jobs
from webapp import keys
from webapp.delivery import digests
from webapp.extensions import db, get_redis
from webapp.inbox import service as inbox
from webapp.models import DeliveryLog, DigestRun, ServiceToken
from webapp.notify import idempotency
from webapp.notify.api import MAX_KEY
from webapp.notify.idempotency import PENDING_TTL

pytestmark = pytest.mark.both_databases
LOCK_WAIT_MS = WAIT * 3 * 1000  # a held request must not give up before the test lets it go


def post(app, token, body, key):
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    return app.test_client().post("/api/v1/events", data=json.dumps(body), headers=headers,
                                  content_type="application/json")


def event(uid):
    return {"type": "ORDER_EXECUTED", "user_id": uid, "title": "Bought 0.5 BTC"}


def inbox_size(app, uid):
    with app.app_context():
        return len(inbox.list_page(uid, limit=100)[0])


def token_id(app):
    with app.app_context():
        return db.session.scalar(db.select(ServiceToken.id))


def needs_postgres(db_backend):
    if db_backend != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite readers never wait for a lock (WAL)")


@contextmanager
def table_lock(table, mode):
    """Hold a lock on `table` from another connection; yield how many wait for it."""
    with psycopg.connect(PG_URL) as holder, psycopg.connect(PG_URL, autocommit=True) as spy:
        holder.execute(f"LOCK TABLE {table} IN {mode} MODE")

        def waiting():  # in this database only: the server is shared with others
            return spy.execute(
                "SELECT count(*) FROM pg_locks JOIN pg_stat_activity USING (pid) "
                "WHERE NOT granted AND datname = current_database()").fetchone()[0]

        yield waiting
        holder.rollback()


def in_thread(target):
    """Run target() in a thread; join() returns its result."""
    result = []
    thread = threading.Thread(target=lambda: result.append(target()), daemon=True)
    thread.start()

    def join():
        thread.join(WAIT * 3)
        assert not thread.is_alive(), "the held request never finished"
        return result[0]

    return join


def test_an_over_long_key_is_refused_before_anything_is_stored(app, token):
    uid = make_user(app, "long@example.com")
    refused = post(app, token, event(uid), "k" * (MAX_KEY + 1))
    assert refused.status_code == 422 and refused.json["error"] == "invalid_input"
    assert refused.json["detail"] == f"Idempotency-Key is at most {MAX_KEY} characters."
    assert inbox_size(app, uid) == 0
    assert post(app, token, event(uid), "k" * MAX_KEY).status_code == 202
    assert inbox_size(app, uid) == 1


def test_a_duplicate_while_the_first_is_in_flight_gets_409(make_app, db_backend):
    needs_postgres(db_backend)
    app = make_app(PG_LOCK_TIMEOUT_MS=LOCK_WAIT_MS)
    token = app.test_cli_runner().invoke(args=["tokens", "create", "orders"]).output.split()[-1]
    uid = make_user(app, "race@example.com")
    with table_lock("users", "ACCESS EXCLUSIVE") as waiting:  # the first one's user lookup
        first = in_thread(lambda: post(app, token, event(uid), "order-77"))
        assert poll(lambda: waiting() == 1), "the first request never reached the lock"
        duplicate = post(app, token, event(uid), "order-77")
        assert duplicate.status_code == 409 and duplicate.json["error"] == "conflict"
        assert duplicate.headers["Retry-After"] == "1"
        assert inbox_size(app, uid) == 0
        with app.app_context():  # had the first one's process been killed, this frees it
            ttl = get_redis().ttl(keys.idempotency(f"svc{token_id(app)}", "order-77"))
        assert 0 < ttl <= PENDING_TTL
    first = first()
    assert first.status_code == 202
    again = post(app, token, event(uid), "order-77")
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json["ids"] == first.json["ids"] and inbox_size(app, uid) == 1


def test_a_request_that_dies_mid_way_leaves_its_key_to_the_retry(make_app, db_backend):
    needs_postgres(db_backend)
    app = make_app(PG_LOCK_TIMEOUT_MS=50)  # the first one gives up on the lock: it raises
    token = app.test_cli_runner().invoke(args=["tokens", "create", "orders"]).output.split()[-1]
    uid = make_user(app, "crash@example.com")
    with table_lock("users", "ACCESS EXCLUSIVE"):
        died = post(app, token, event(uid), "order-78")
    assert died.status_code == 503 and died.json["error"] == "service_unavailable"
    with app.app_context():
        saved = get_redis().get(keys.idempotency(f"svc{token_id(app)}", "order-78"))
        assert json.loads(saved)["failed"] is True
    retry = post(app, token, event(uid), "order-78")
    assert retry.status_code == 202 and "Idempotent-Replayed" not in retry.headers
    assert inbox_size(app, uid) == 1


def test_a_request_failing_with_redis_leaves_its_key_to_the_retry_once_it_is_back(
        make_app, db_backend, tmp_path):
    """Redis killed while the request waits on the database: its publish fails, and so does
    marking its claim failed. That is done once Redis is back (the claim survived in the
    append-only file), so the retry is taken at once, not refused 409 for PENDING_TTL."""
    needs_postgres(db_backend)
    process, url = redisd.start(tmp_path / "redis")  # append-only, as make run keeps it
    try:
        app = make_app(REDIS_URL=url, PG_LOCK_TIMEOUT_MS=LOCK_WAIT_MS)
        token = app.test_cli_runner().invoke(args=["tokens", "create", "o"]).output.split()[-1]
        uid = make_user(app, "blip@example.com")
        store = keys.idempotency(f"svc{token_id(app)}", "order-79")
        with table_lock("users", "ACCESS EXCLUSIVE") as waiting:
            first = in_thread(lambda: post(app, token, event(uid), "order-79"))
            assert poll(lambda: waiting() == 1), "the request never reached the lock"
            process.kill()
            redisd.stop(process)  # reaped, its pipe closed
        assert first().status_code == 503
        process, _ = redisd.start(tmp_path / "redis")
        with redis.Redis.from_url(url) as fresh:
            assert poll(lambda: json.loads(fresh.get(store)).get("failed")), \
                "the key stayed claimed"
        retry = post(app, token, event(uid), "order-79")
        assert retry.status_code == 202 and "Idempotent-Replayed" not in retry.headers
        assert inbox_size(app, uid) == 1
    finally:
        redisd.stop(process)


def test_a_claim_sent_to_a_frozen_redis_is_marked_failed_once_it_lands(make_app, tmp_path):
    """Redis frozen (SIGSTOP): the request gives up (503), yet its claim's SET was sent and
    runs when Redis thaws. It is marked failed then, so the retry is taken at once, not
    refused 409 for PENDING_TTL."""
    process, url = redisd.start(tmp_path / "redis")
    try:
        app = make_app(REDIS_URL=url)
        token = app.test_cli_runner().invoke(args=["tokens", "create", "o"]).output.split()[-1]
        uid = make_user(app, "frozen@example.com")
        assert post(app, token, event(uid), "order-80-warm").status_code == 202  # caches warm
        store = keys.idempotency(f"svc{token_id(app)}", "order-80")
        os.kill(process.pid, signal.SIGSTOP)
        try:
            first = post(app, token, event(uid), "order-80")
        finally:
            os.kill(process.pid, signal.SIGCONT)
        assert first.status_code == 503
        with redis.Redis.from_url(url) as fresh:
            assert fresh.get(store) is not None  # the claim landed after the request gave up
            assert poll(lambda: json.loads(fresh.get(store)).get("failed")), \
                "the key stayed claimed"
        retry = post(app, token, event(uid), "order-80")
        assert retry.status_code == 202 and "Idempotent-Replayed" not in retry.headers
        assert inbox_size(app, uid) == 2
    finally:
        redisd.stop(process)


def test_a_failed_request_marks_only_its_own_claim(r):
    """Past PENDING_TTL a retry may have claimed the key: a late mark leaves it alone."""
    old, new = '{"state": "pending", "tag": "old"}', '{"state": "pending", "tag": "new"}'
    ends_ms = int(time.time() * 1000) + 60_000
    idempotency.failed(r, "tb:idem:t:1", old, "failed", ends_ms)
    assert r.get("tb:idem:t:1") is None
    r.set("tb:idem:t:1", new)
    idempotency.failed(r, "tb:idem:t:1", old, "failed", ends_ms)
    assert r.get("tb:idem:t:1") == new
    idempotency.failed(r, "tb:idem:t:1", new, "failed", ends_ms)
    assert r.get("tb:idem:t:1") == "failed" and 55 <= r.ttl("tb:idem:t:1") <= 60


def test_two_scheduler_runs_racing_for_one_digest_send_one_email(make_app, db_backend,
                                                                 smtp_server):
    needs_postgres(db_backend)
    app = make_app(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port, SMTP_TLS="none",
                   PG_LOCK_TIMEOUT_MS=LOCK_WAIT_MS)
    uid = make_user(app, "digest@example.com", email_weekly_performance=False)
    now = datetime(2030, 1, 15, 9, 0, tzinfo=UTC)  # after the 08:00 send time
    with app.app_context():
        inbox.store({"user_id": uid, "type": "STRATEGY_STATUS", "title": "momo resumed"},
                    now_ms=int((now - timedelta(days=1)).timestamp() * 1000))

    def scheduler_run():
        with app.app_context():
            queued = digests.send_due(now)
            db.session.remove()
            return queued

    # both runs find no claim yet, then both wait to write theirs: one on the lock, the
    # other (its delivery row's unique key) on the first one's transaction
    with table_lock("digest_runs", "EXCLUSIVE") as waiting:
        runs = [in_thread(scheduler_run) for _ in range(2)]
        assert poll(lambda: waiting() == 2), "the runs never both reached their claim"
    queued = sorted(len(join()) for join in runs)
    assert queued == [0, 1]
    run_jobs(app)
    [mail] = smtp_server.wait_for(1)
    assert mail["msg"]["Subject"] == "Tickerbell daily summary: 2030-01-14"
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(DigestRun.id))) == 1
        assert db.session.scalar(db.select(db.func.count(DeliveryLog.id))) == 1
