"""Deliveries that go wrong: a provider down (email, push) behind its breaker, the last retry,
a message that cannot be built, and push to several devices when some of them fail."""

import logging
import socket
from datetime import datetime

import pytest
from aiosmtpd.controller import Controller
from prometheus_client import REGISTRY
from rq.job import Job
from rq.registry import FailedJobRegistry

from tests.hub import Mailbox, make_user, poll, run_jobs
from tests.test_deliveries import logs, providers, send, subscriber, vapid_app
from webapp import clock
from webapp.core.queues import enqueue, get_queue, rq_connection
from webapp.delivery import dispatch
from webapp.delivery.dispatch import breaker
from webapp.delivery.sweep import sweep
from webapp.extensions import db
from webapp.inbox import service as inbox
from webapp.models import DeliveryLog, PushSubscription, User
from webapp.notify import router

pytestmark = pytest.mark.both_databases


def counted(status, channel="email"):
    """tickerbell_deliveries_total's count (the tests' processes use the default registry)."""
    return REGISTRY.get_sample_value("tickerbell_deliveries_total",
                                     {"channel": channel, "status": status}) or 0.0


def step(app, nid):
    """One sweep and the jobs it queued: every due retry gets its next attempt."""
    with app.app_context():
        sweep()
    run_jobs(app)
    return logs(app, notification_id=nid)[0]


@pytest.fixture
def late_smtp():
    """A port no SMTP server listens on yet, and start() to open one there."""
    box, controllers = Mailbox(), []
    # bound but not listening: connections are refused, and no other process takes the port
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    box.port = holder.getsockname()[1]

    def start():
        holder.close()
        controller = Controller(box, hostname="127.0.0.1", port=box.port)
        controller.start()
        controllers.append(controller)
        return box

    box.start = start
    yield box
    holder.close()
    for controller in controllers:
        controller.stop()


def test_email_relay_down_retries_opens_the_breaker_and_recovers(make_app, late_smtp, caplog):
    app = make_app(**providers(smtp=late_smtp, DELIVERY_BREAKER_RESET=2.0))
    uid = make_user(app, "ann@example.com")
    nid = send(app, user_id=uid, title="BTC above 65000")
    run_jobs(app)
    row = logs(app, notification_id=nid)[0]
    assert (row.status, row.attempts) == ("retrying", 1) and "Connection refused" in row.error
    row = step(app, nid)  # the second failure reaches the threshold (2)
    with app.app_context():
        assert breaker("email").state()["state"] == "open"
    caplog.set_level(logging.INFO, logger="webapp.delivery.dispatch")
    retrying, deferred = counted("retrying"), counted("deferred")
    row = step(app, nid)  # open: no connection is tried, no attempt is spent
    assert row.attempts == 2 and "circuit open" in row.error and row.status == "retrying"
    assert row.error.count("Connection refused") == 1  # the provider's last answer, kept
    row = step(app, nid)  # still open: the note is not said twice
    assert row.error.count("circuit open") == 1 and row.error.count("Connection refused") == 1
    # ... nor counted as one on /metrics: a dashboard's failure rate counts attempts
    assert (counted("retrying"), counted("deferred")) == (retrying, deferred + 1)
    assert f"event=delivery_deferred delivery_id={row.id} channel=email" \
        in caplog.text  # a request id followed to its deliveries ends here, not in silence
    late_smtp.start()
    app.config["DELIVERY_BREAKER_RESET"] = 0.3  # from here, trials come quickly
    row = poll(lambda: (r := step(app, nid)).status == "sent" and r)
    assert row.attempts == 3 and len(late_smtp.wait_for(1)) == 1
    with app.app_context():
        assert breaker("email").state()["state"] == "closed"


def test_email_gives_up_after_its_last_retry(make_app, late_smtp):
    app = make_app(**providers(smtp=late_smtp, DELIVERY_MAX_ATTEMPTS=3,
                               DELIVERY_BREAKER_THRESHOLD=100))
    uid = make_user(app, "bo@example.com")
    nid = send(app, user_id=uid)
    run_jobs(app)
    assert [step(app, nid).status for _ in range(2)] == ["retrying", "failed"]
    row = step(app, nid)
    assert (row.status, row.attempts) == ("failed", 3) and "Connection refused" in row.error
    assert row.next_attempt_at is None
    late_smtp.start()
    assert step(app, nid).status == "failed" and late_smtp.messages == []


def test_push_service_down_retries_opens_the_breaker_and_recovers(make_app, http_recorder):
    service = http_recorder()
    service.failures = 3
    # open for 2 s: the step right after must find it still open on a loaded machine (with
    # 0.3 s a CI run once took longer between the two, and the step went through)
    app = vapid_app(make_app, DELIVERY_BREAKER_RESET=2.0)
    uid = make_user(app, "cy@example.com", email_alerts=False)
    subscriber(app, uid, service.url + "/push/one")
    nid = send(app, user_id=uid)
    run_jobs(app)
    row = logs(app, notification_id=nid)[0]
    assert (row.status, row.attempts) == ("retrying", 1) and "503" in row.error
    step(app, nid)
    with app.app_context():
        assert breaker("push").state()["state"] == "open"
    row = step(app, nid)
    assert row.attempts == 2 and len(service.requests) == 2 and "circuit open" in row.error
    row = poll(lambda: (r := step(app, nid)).status == "sent" and r)
    assert row.attempts == 4 and len(service.requests) == 4  # 3 failures, then the success
    with app.app_context():
        assert breaker("push").state()["state"] == "closed"


def test_push_gives_up_after_its_last_retry_and_keeps_the_subscription(make_app, http_recorder):
    service = http_recorder(status=500)
    app = vapid_app(make_app, DELIVERY_MAX_ATTEMPTS=2, DELIVERY_BREAKER_THRESHOLD=100)
    uid = make_user(app, "dee@example.com", email_alerts=False)
    subscriber(app, uid, service.url + "/push/flaky")
    nid = send(app, user_id=uid)
    run_jobs(app)
    row = step(app, nid)
    assert (row.status, row.attempts) == ("failed", 2) and "500" in row.error
    assert step(app, nid).attempts == 2 and len(service.requests) == 2
    with app.app_context():  # a server error is not "gone": the device stays subscribed
        assert db.session.scalar(db.select(db.func.count(PushSubscription.id))) == 1


def devices(app):
    with app.app_context():
        return sorted(db.session.scalars(db.select(PushSubscription.endpoint)))


def test_push_to_several_devices_when_some_fail(make_app, http_recorder):
    ok, broken, gone = http_recorder(), http_recorder(status=500), http_recorder(status=410)
    app = vapid_app(make_app)
    uid = make_user(app, "eve@example.com", email_alerts=False)
    for service, name in ((ok, "phone"), (broken, "laptop"), (gone, "old-tablet")):
        subscriber(app, uid, f"{service.url}/push/{name}")
    with app.app_context():
        [phone_id] = db.session.scalars(db.select(PushSubscription.id).where(
            PushSubscription.endpoint.endswith("/phone")))
    nid = send(app, user_id=uid, title="ETH below 3000")
    run_jobs(app)
    row = logs(app, notification_id=nid)[0]
    # one device took it: the delivery is sent (not retried for the broken one) ...
    assert (row.status, row.attempts, row.provider_id) == ("sent", 1, f"devices {phone_id}")
    assert [len(s.requests) for s in (ok, broken, gone)] == [1, 1, 1]
    # ... and the device its push service calls gone is unsubscribed; the broken one stays
    assert devices(app) == sorted([f"{ok.url}/push/phone", f"{broken.url}/push/laptop"])
    step(app, nid)
    assert [len(s.requests) for s in (ok, broken, gone)] == [1, 1, 1]


def test_push_when_every_device_fails_retries_without_the_gone_one(make_app, http_recorder):
    broken, gone = http_recorder(status=500), http_recorder(status=410)
    app = vapid_app(make_app, DELIVERY_BREAKER_THRESHOLD=100)
    uid = make_user(app, "fay@example.com", email_alerts=False)
    subscriber(app, uid, f"{broken.url}/push/laptop")
    subscriber(app, uid, f"{gone.url}/push/old-tablet")
    nid = send(app, user_id=uid)
    run_jobs(app)
    row = logs(app, notification_id=nid)[0]
    assert (row.status, row.attempts) == ("retrying", 1) and "500" in row.error
    assert devices(app) == [f"{broken.url}/push/laptop"]
    broken.status = 201
    row = step(app, nid)
    assert (row.status, row.attempts) == ("sent", 2)
    assert (len(broken.requests), len(gone.requests)) == (2, 1)


def test_a_notification_deleted_before_its_retry_fails_without_an_attempt(make_app, late_smtp):
    app = make_app(**providers(smtp=late_smtp))
    uid = make_user(app, "gus@example.com")
    nid = send(app, user_id=uid)
    run_jobs(app)
    assert logs(app, notification_id=nid)[0].status == "retrying"
    with app.app_context():
        inbox.delete(uid, nid)
    late_smtp.start()
    row = step(app, nid)
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.error == "the notification was deleted before it could be sent"
    assert late_smtp.messages == []


def test_a_message_that_cannot_be_built_is_retried_then_given_up(make_app, smtp_server,
                                                                 refused_port):
    # the same database, its Redis gone: the inbox entry the email is built from is out of
    # reach (made first: on PostgreSQL each new app starts the schema afresh)
    cut_off = make_app(create_tables=False, REDIS_URL=f"redis://127.0.0.1:{refused_port}/0",
                       **providers(smtp=smtp_server, DELIVERY_MAX_ATTEMPTS=2))
    app = make_app(**providers(smtp=smtp_server, DELIVERY_MAX_ATTEMPTS=2))
    uid = make_user(app, "hal@example.com", quiet_start="10:00", quiet_end="14:00")
    with app.app_context():  # at noon, in quiet hours: the delivery row waits, unsent
        nid = router.route({"type": "PRICE_ALERT", "user_id": uid, "title": "t"},
                           now_ms=clock.to_ms(datetime(2030, 1, 15, 12, 0)))[0]
    run_jobs(app)
    row = logs(app, notification_id=nid)[0]
    assert row.status == "held"
    with cut_off.app_context():
        # quiet hours over, as the sweep releases it
        db.session.execute(db.update(DeliveryLog).values(status="queued"))
        db.session.commit()
        for attempt in (1, 2):
            assert dispatch.send(row.id) == ("retrying", "failed")[attempt - 1]  # as RQ runs it
            row = logs(cut_off, notification_id=nid)[0]
            assert row.attempts == attempt and "ConnectionError" in row.error
    assert smtp_server.messages == []
    with app.app_context():
        assert breaker("email").state()["failures"] == 0  # the relay was never called


def leave_a_failed_flush():
    """A job that fails mid-transaction, as one meeting a locked database at its commit does."""
    db.session.add(User(email=None))
    db.session.flush()


def test_a_job_failing_mid_transaction_leaves_the_jobs_after_it_working(make_app,
                                                                          smtp_server):
    """The worker's jobs share its app context: the failed one's session must not fail every
    job after it at once (the drill: 141 emails stuck behind one locked commit)."""
    app = make_app(**providers(smtp=smtp_server))
    uid = make_user(app, "after@example.com", delivery_email="desk@example.com")
    with app.app_context():
        enqueue(leave_a_failed_flush, queue="high")  # runs first: the high queue's oldest
        router.route({"user_id": uid, "type": "ORDER_EXECUTION_FAILED",
                      "title": "Order failed", "message": "margin"})
    run_jobs(app)
    assert smtp_server.wait_for(1)
    with app.app_context():
        rows = db.session.scalars(db.select(DeliveryLog).where(DeliveryLog.user_id == uid))
        assert [(row.channel, row.status) for row in rows] == [("email", "sent")]


def test_a_delivery_still_waiting_in_its_queue_is_not_queued_again(make_app, smtp_server):
    """Behind a backlog a queued row looks lost after LOST_QUEUED: each sweep queued it again
    (the drill found one job 6 times in `default`), and every copy ran."""
    app = make_app(**providers(smtp=smtp_server))
    uid = make_user(app, "cat@example.com")
    nid = send(app, user_id=uid, title="BTC above 65000")
    run_jobs(app)
    smtp_server.wait_for(1)
    with app.app_context():  # queued again long ago; its job still waits for a worker
        row = db.session.scalars(db.select(DeliveryLog).filter_by(notification_id=nid)).one()
        row.status, row.updated_at = "queued", clock.utcnow() - dispatch.LOST_QUEUED * 2
        db.session.commit()
        enqueue(dispatch.send, row.id, job_id=f"delivery-{row.id}")
        assert [sweep(), sweep()] == [0, 0]
        assert rq_connection().lrange("rq:queue:default", 0, -1) == [f"delivery-{row.id}".encode()]
    run_jobs(app)
    assert len(smtp_server.wait_for(2)) == 2 and logs(app, notification_id=nid)[0].status == "sent"


def test_a_delivery_whose_job_failed_for_good_leaves_the_failed_list_when_the_sweep_sends_it(
        make_app, smtp_server):
    """A drill: a delivery job failed for good on a locked database, its row still queued;
    the sweep sent it minutes later, yet `flask status` went on listing the job as failed."""
    app = make_app(**providers(smtp=smtp_server))
    uid = make_user(app, "dog@example.com")
    nid = send(app, user_id=uid, title="BTC above 65000")
    run_jobs(app)
    smtp_server.wait_for(1)
    with app.app_context():  # as if its job had failed for good, the row left queued
        row = db.session.scalars(db.select(DeliveryLog).filter_by(notification_id=nid)).one()
        row.status, row.updated_at = "queued", clock.utcnow() - dispatch.LOST_QUEUED * 2
        db.session.commit()
        job = Job.fetch(f"delivery-{row.id}", connection=rq_connection())
        FailedJobRegistry(job.origin, connection=rq_connection()).add(job, exc_string="locked")
        assert sweep() == 1
    run_jobs(app)
    assert len(smtp_server.wait_for(2)) == 2 and logs(app, notification_id=nid)[0].status == "sent"
    with app.app_context():
        assert job.id not in FailedJobRegistry(job.origin, connection=rq_connection())


def test_a_delivery_whose_worker_died_as_it_took_the_job_is_queued_again(make_app, smtp_server):
    """RQ moves a job it takes to the queue's intermediate list and marks it started after: a
    worker killed in between left the job's record saying queued, and the sweep took it for
    waiting (a drill's email held 6.5 minutes and counting, RQ's own clean-up slower still)."""
    app = make_app(**providers(smtp=smtp_server))
    uid = make_user(app, "eel@example.com")
    nid = send(app, user_id=uid, title="BTC above 65000")
    run_jobs(app)
    smtp_server.wait_for(1)
    with app.app_context():
        row = db.session.scalars(db.select(DeliveryLog).filter_by(notification_id=nid)).one()
        row.status, row.updated_at = "queued", clock.utcnow() - dispatch.LOST_QUEUED * 2
        db.session.commit()
        job = enqueue(dispatch.send, row.id, job_id=f"delivery-{row.id}")
        queue = get_queue("default")
        rq_connection().lmove(queue.key, queue.intermediate_queue_key)  # taken; then killed
        assert job.get_status(refresh=True) == "queued"
        assert sweep() == 1
        # not left for RQ's clean-up to fail the job queued again
        assert rq_connection().llen(queue.intermediate_queue_key) == 0
    run_jobs(app)
    assert len(smtp_server.wait_for(2)) == 2 and logs(app, notification_id=nid)[0].status == "sent"
