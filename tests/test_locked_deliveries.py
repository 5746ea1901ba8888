"""Deliveries while the database is locked: a job that cannot claim its row runs again in
seconds, and an email the relay took is written sent, never sent twice."""

import json
import logging
import sqlite3
import threading
import time
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from rq.job import Job

from devtools import redisd
from tests.hub import Mailbox, PortZeroController, make_user, run_jobs
from tests.test_idempotency import needs_postgres, table_lock
from tests.test_sql_faults import db_path, locked
from webapp import clock, keys
from webapp.alerts import service as alerts
from webapp.core import processes
from webapp.core.queues import QUEUES, get_queue, rq_connection
from webapp.delivery import dispatch
from webapp.delivery.dispatch import DEAD_SENDER, STALE_SENDING
from webapp.delivery.sweep import sweep
from webapp.extensions import db, get_redis
from webapp.models import DeliveryLog
from webapp.notify import router, slowsteps


class LockingMailbox(Mailbox):
    """Takes the database's write lock as it accepts a message and holds it `hold_s`: the
    sender's next commit (its delivery's "sent") meets a locked database."""

    def __init__(self, path, hold_s):
        super().__init__()
        self.path, self.hold_s = path, hold_s

    async def handle_DATA(self, server, session, envelope):
        holder = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        threading.Timer(self.hold_s, lambda: (holder.execute("ROLLBACK"), holder.close())).start()
        return await super().handle_DATA(server, session, envelope)


def test_an_email_sent_as_the_database_locks_is_recorded_sent_and_never_sent_again(make_app):
    """The relay took the email; the row's "sent" then waits out the lock instead of failing
    the job, which left it "sending" for the sweep to send again (the drill's duplicate)."""
    app = make_app(SQLITE_BUSY_TIMEOUT_MS=200)
    box = LockingMailbox(db_path(app), hold_s=1.5)
    smtp = PortZeroController(box, hostname="127.0.0.1")
    smtp.start()
    try:
        app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp.port, SMTP_TLS="none")
        uid = make_user(app, "locked@example.com", delivery_email="desk@example.com")
        with app.app_context():
            router.route({"user_id": uid, "type": "ORDER_EXECUTION_FAILED",
                          "title": "Order failed", "message": "margin"})
        run_jobs(app)
        with app.app_context():
            [row] = db.session.scalars(db.select(DeliveryLog).where(DeliveryLog.user_id == uid))
            assert (row.channel, row.status, row.attempts) == ("email", "sent", 1)
            sweep(now=clock.utcnow() + STALE_SENDING * 2)  # long after: nothing left to send
        run_jobs(app)
        assert len(box.wait_for(2, timeout=1)) == 1
    finally:
        smtp.stop()


def test_a_delivery_job_meeting_a_locked_database_runs_again_in_seconds(make_app, smtp_server):
    """Its row not claimed (the lock), the job fails whole: RQ runs it again after 1 s, not
    the sweep after 5 minutes (the re-drill's rows queued for 5 min 3 s)."""
    app = make_app(SQLITE_BUSY_TIMEOUT_MS=100, SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port,
                   SMTP_TLS="none")
    uid = make_user(app, "retried@example.com", delivery_email="desk@example.com")
    with app.app_context():
        router.route({"user_id": uid, "type": "ORDER_EXECUTION_FAILED", "title": "Order failed",
                      "message": "margin"})
        for name in slowsteps.QUEUES:
            get_queue(name).empty()  # its drain job: run here, on its own
            slowsteps.drain(name)  # the delivery planned, its send job queued
        [job] = [j for name in slowsteps.QUEUES for j in get_queue(name).jobs
                 if j.id.startswith("delivery-")]
    with locked(app):
        run_jobs(app)  # the claim meets the lock: the job fails, a retry is scheduled
    with app.app_context():
        assert Job.fetch(job.id, connection=rq_connection()).get_status() == "scheduled"
    time.sleep(1.2)  # the retry's interval is the thing under test: RQ's 1 s
    worked = app.test_cli_runner().invoke(args=["worker", "--burst"])  # with RQ's scheduler
    assert worked.exit_code == 0, worked.output
    assert len(smtp_server.wait_for(1)) == 1
    with app.app_context():
        [row] = db.session.scalars(db.select(DeliveryLog).where(DeliveryLog.user_id == uid))
        assert row.status == "sent"


def test_a_send_whose_worker_died_goes_out_within_a_minute_not_ten(make_app, smtp_server,
                                                                    monkeypatch):
    """A worker killed mid-send leaves its row `sending`. While the process that claimed it
    beats, the sweep leaves it be; once that process stops beating, the sweep sends it again
    DEAD_SENDER after the claim, not STALE_SENDING (a drill's critical email, 10 min late)."""
    app = make_app(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port, SMTP_TLS="none")
    uid = make_user(app, "killed@example.com", delivery_email="desk@example.com")
    with app.app_context():
        router.route({"user_id": uid, "type": "RISK_VIOLATION", "title": "Limit breached",
                      "message": "leverage"})
        for name in slowsteps.QUEUES:
            get_queue(name).empty()
            slowsteps.drain(name)  # the delivery planned, its send job queued
        for name in QUEUES:
            get_queue(name).empty()  # the send job: the killed worker had taken it
        [row_id] = db.session.scalars(db.select(DeliveryLog.id).where(DeliveryLog.user_id == uid))
        r = get_redis()
        field = "worker:killed-host:4242"
        monkeypatch.setattr(processes, "beating", field)
        assert dispatch._claim(row_id, clock.utcnow()) is not None
        claimed = clock.utcnow() - DEAD_SENDER - timedelta(seconds=1)
        db.session.execute(db.update(DeliveryLog).where(DeliveryLog.id == row_id)
                           .values(updated_at=claimed))
        db.session.commit()

        def beat(age_ms):
            r.hset(keys.PROCESSES, field, json.dumps(
                {"role": "worker", "host": "killed-host", "pid": 4242,
                 "started_ms": 0, "beat_ms": clock.now_ms() - age_ms}))

        beat(0)  # alive, a slow send: left to finish
        assert sweep() == 0 and db.session.get(DeliveryLog, row_id).status == "sending"
        beat(processes.STALE_MS + 1000)  # silent 16 s: a clock apart, a failover: not yet
        assert sweep() == 0 and db.session.get(DeliveryLog, row_id).status == "sending"
        r.hdel(keys.PROCESSES, field)  # left the list: stopped, or its Redis lost it
        assert sweep() == 0 and db.session.get(DeliveryLog, row_id).status == "sending"
        beat(DEAD_SENDER.total_seconds() * 1000 + 1000)  # killed: it stopped beating
        assert sweep() == 1
        db.session.expire_all()
        row = db.session.get(DeliveryLog, row_id)
        assert (row.status, row.error, row.attempts) == ("retrying", "worker stopped mid-send", 1)
    run_jobs(app)
    assert len(smtp_server.wait_for(1)) == 1
    with app.app_context():  # the killed worker's attempt, then the one that sent it
        assert (db.session.get(DeliveryLog, row_id).status,
                db.session.get(DeliveryLog, row_id).attempts) == ("sent", 2)


class RedisKillingMailbox(Mailbox):
    """Takes the message, then kills the Redis the sender uses: the breaker's write after
    the send finds no Redis."""

    def __init__(self, redis_process):
        super().__init__()
        self.redis_process = redis_process

    async def handle_DATA(self, server, session, envelope):
        answer = await super().handle_DATA(server, session, envelope)
        self.redis_process.kill()
        self.redis_process.wait()
        return answer


def planned_delivery(app, uid):
    """The id of the user's delivery row, planned, its send job taken off the queue."""
    with app.app_context():
        router.route({"user_id": uid, "type": "RISK_VIOLATION", "title": "Limit breached",
                      "message": "leverage"})
        for name in slowsteps.QUEUES:
            get_queue(name).empty()
            slowsteps.drain(name)
        for name in QUEUES:
            get_queue(name).empty()
        return db.session.scalar(db.select(DeliveryLog.id).where(DeliveryLog.user_id == uid))


def test_an_email_sent_as_redis_dies_is_recorded_sent_not_sent_again(make_app, tmp_path):
    """The relay took the email, then Redis died before the breaker heard: the row was left
    `sending`, and the sweep sent it again (a drill's duplicate webhook)."""
    process, url = redisd.start(tmp_path / "redis", appendonly=False)
    box = RedisKillingMailbox(process)
    smtp = PortZeroController(box, hostname="127.0.0.1")
    smtp.start()
    try:
        app = make_app(REDIS_URL=url, SMTP_HOST="127.0.0.1", SMTP_PORT=smtp.port,
                       SMTP_TLS="none")
        uid = make_user(app, "dying@example.com", delivery_email="desk@example.com")
        row_id = planned_delivery(app, uid)
        with app.app_context():
            assert dispatch.send(row_id) == "sent"
            row = db.session.get(DeliveryLog, row_id)
            assert (row.status, row.attempts) == ("sent", 1)
        assert len(box.wait_for(1)) == 1
    finally:
        smtp.stop()
        redisd.stop(process)


@pytest.mark.both_databases
def test_a_delivery_whose_alert_is_locked_is_retried_not_left_sending(make_app, db_backend,
                                                                       smtp_server):
    """Building the message reads the alert; a lock on `alerts` (PostgreSQL) aborted the
    transaction, the retry's commit then failed too, and the row stayed `sending` for 10
    minutes."""
    needs_postgres(db_backend)
    app = make_app(PG_LOCK_TIMEOUT_MS=200, SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port,
                   SMTP_TLS="none", DELIVERY_BACKOFF=0)
    uid = make_user(app, "locked-alert@example.com", delivery_email="desk@example.com")
    with app.app_context():
        alert = alerts.create_alert(uid, {"symbol": "BTCUSDT", "condition": "above",
                                          "target": 1e9, "message": "Mine: {{ price }}"})
        db.session.commit()
        router.route({"user_id": uid, "type": "PRICE_ALERT", "title": "BTCUSDT above",
                      "message": "traded", "alert_id": str(alert.id)})
        for name in slowsteps.QUEUES:
            get_queue(name).empty()
            slowsteps.drain(name)
        for name in QUEUES:
            get_queue(name).empty()
        row_id = db.session.scalar(db.select(DeliveryLog.id).where(DeliveryLog.user_id == uid))
    with table_lock("alerts", "ACCESS EXCLUSIVE"), app.app_context():
        assert dispatch.send(row_id) == "retrying"
        row = db.session.get(DeliveryLog, row_id)
        assert (row.status, row.attempts) == ("retrying", 1) and "lock" in row.error
    run_jobs(app)  # nothing queued: the sweep's business
    with app.app_context():
        sweep()
    run_jobs(app)
    [mail] = smtp_server.wait_for(1)
    assert "Mine:" in mail["msg"].get_body(("plain",)).get_content()
    with app.app_context():
        assert db.session.get(DeliveryLog, row_id).status == "sent"


def test_a_periodic_job_meeting_a_locked_database_is_one_warning_not_an_error(make_app,
                                                                              caplog):
    """Its next run comes in seconds; RQ's ERROR and traceback on every sweep while a lock
    was held told an operator something needed a hand."""
    app = make_app(SQLITE_BUSY_TIMEOUT_MS=100)
    with app.app_context():
        get_queue("default").enqueue("webapp.delivery.sweep.sweep", job_id="deliveries-sweep",
                                     meta={"interval": 30})
    with locked(app):
        run_jobs(app)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    [line] = [r for r in caplog.records if getattr(r, "event", None) == "job_waits_for_database"]
    assert line.levelname == "WARNING" and "locked" in line.error
    run_jobs(app)  # once the lock is gone, the next run is no trouble
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.both_databases
def test_health_reports_while_the_delivery_log_is_locked(make_app, db_backend):
    """Its per-channel figures come from SQL: under a lock the report stands without them,
    rather than the API's 503 for a busy database in place of the report."""
    needs_postgres(db_backend)
    app = make_app(PG_LOCK_TIMEOUT_MS=200)
    with table_lock("delivery_log", "ACCESS EXCLUSIVE"):
        body = app.test_client().get("/api/v1/health").get_json()
    assert body["redis"] == "ok" and body["deliveries"] is None and "processes" in body
    assert "email" in app.test_client().get("/api/v1/health").get_json()["deliveries"]


@pytest.mark.both_databases
def test_health_reports_under_a_lock_even_with_no_lock_timeout_set(make_app, db_backend):
    """PG_LOCK_TIMEOUT_MS=0 lets a write wait for a lock as long as it takes; the health
    report still answers within its own second, without the SQL figures."""
    needs_postgres(db_backend)
    app = make_app(PG_LOCK_TIMEOUT_MS=0)
    got = {}

    def ask():
        got["body"] = app.test_client().get("/api/v1/health").get_json()

    with table_lock("delivery_log", "ACCESS EXCLUSIVE"):
        asking = threading.Thread(target=ask, daemon=True)
        asking.start()
        asking.join(30)
        answered_under_the_lock = "body" in got
    asking.join(30)
    assert answered_under_the_lock and got["body"]["deliveries"] is None


def test_a_delivery_job_failing_for_good_on_a_lock_is_one_warning(make_app, caplog):
    """Its row stays queued and the sweep takes it up again (minutes later): no retry left,
    RQ's ERROR and traceback still told an operator of a delivery lost."""
    app = make_app(SQLITE_BUSY_TIMEOUT_MS=100)
    uid = make_user(app, "lockedout@example.com", delivery_email="desk@example.com")
    with app.app_context():
        router.route({"user_id": uid, "type": "PRICE_ALERT", "title": "queued"})
        for name in QUEUES:  # its slow steps: the delivery row and its send job
            slowsteps.drain(name)
        [row_id] = db.session.scalars(db.select(DeliveryLog.id)).all()
        db.session.remove()
        job = Job.fetch(f"delivery-{row_id}", connection=rq_connection())
        job.retries_left = 0  # its last try
        job.save()
    with locked(app):
        run_jobs(app)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any(getattr(r, "event", None) == "job_waits_for_database"
               and r.job_id == f"delivery-{row_id}" for r in caplog.records)


def failed_count():
    return REGISTRY.get_sample_value("tickerbell_deliveries_total",
                                     {"channel": "email", "status": "failed"}) or 0


def test_a_send_that_stops_its_worker_on_the_last_attempt_fails_for_good(make_app,
                                                                         smtp_server, caplog):
    """The sweep counts the attempt a stopped worker began: on the last one the row fails,
    why said, and is queued no more (a message that kills every worker it reaches)."""
    app = make_app(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port, SMTP_TLS="none",
                   DELIVERY_MAX_ATTEMPTS=3)
    uid = make_user(app, "poison@example.com", delivery_email="desk@example.com")
    with app.app_context():
        router.route({"user_id": uid, "type": "RISK_VIOLATION", "title": "Limit breached",
                      "message": "leverage"})
        for name in slowsteps.QUEUES:
            slowsteps.drain(name)
        for name in QUEUES:
            get_queue(name).empty()
        [row_id] = db.session.scalars(db.select(DeliveryLog.id).where(DeliveryLog.user_id == uid))
        long_after = clock.utcnow() + STALE_SENDING * 2
        failed_before = failed_count()
        for attempts, status in ((1, "retrying"), (2, "retrying"), (3, "failed")):
            db.session.execute(db.update(DeliveryLog).where(DeliveryLog.id == row_id)
                               .values(status="sending", updated_at=clock.utcnow()))
            db.session.commit()  # claimed, and the worker stopped before it said how it went
            queued = sweep(now=long_after)
            for name in QUEUES:
                get_queue(name).empty()
            db.session.expire_all()
            row = db.session.get(DeliveryLog, row_id)
            assert (row.status, row.attempts, queued) == (status, attempts, int(status != "failed"))
        assert row.error == "worker stopped mid-send, on its last attempt"
        assert row.next_attempt_at is None
        assert sweep(now=long_after) == 0
    [said] = [r for r in caplog.records if getattr(r, "event", None) == "delivery_finished"]
    assert (said.levelname, said.delivery_id, said.status, said.attempts) == (
        "WARNING", row_id, "failed", 3)
    assert failed_count() == failed_before + 1
