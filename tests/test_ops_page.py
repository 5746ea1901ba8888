"""The operations page (/admin/ops): admins only; the listener, processes, real breaker
state, queues, delivery success rates per channel from the delivery log, and RQ's failed
jobs with a Retry that requeues through RQ."""

from datetime import timedelta

import pytest
from rq import Queue
from rq.registry import FailedJobRegistry

from tests.conftest import csrf_token
from tests.hub import run_jobs
from webapp import clock, keys
from webapp.accounts import service as accounts
from webapp.admin import rates, status
from webapp.core.breaker import Breaker
from webapp.core.processes import Heartbeat
from webapp.core.queues import enqueue, rq_connection
from webapp.delivery.dispatch import breaker as delivery_breaker
from webapp.extensions import db, get_redis
from webapp.models import DeliveryLog, DeliveryStatus, User

ADMIN = ("root@example.com", "correct horse")


def explode(reason):
    """A job that fails as a real one would."""
    raise RuntimeError(f"provider said no: {reason}")


@pytest.fixture
def admin(app, client, auth):
    with app.app_context():
        accounts.create_user(*ADMIN, is_admin=True)
    auth.login(*ADMIN)
    return client


def beating(app, trade_age_ms=1500, lag_ms=None):
    """A connected listener and a live process of every role, as their heartbeats say."""
    with app.app_context():
        r, now = get_redis(), clock.now_ms()
        r.hset(keys.listener_status(0), mapping={
            "state": "connected", "heartbeat": now, "streams": 4, "connections": 2,
            "last_tick_ms": now - trade_age_ms, **({"lag_ms": lag_ms} if lag_ms else {})})
        for role in ("web", "worker", "listener", "scheduler"):
            Heartbeat(r, role).beat()


def deliveries(app, channel, sent, failed, ago=timedelta(minutes=10)):
    when = clock.utcnow() - ago
    with app.app_context():
        uid = db.session.scalar(db.select(User.id).where(User.email == ADMIN[0]))
        db.session.add_all(
            DeliveryLog(notification_id=f"{channel}-{i}-{ago.total_seconds()}", user_id=uid,
                        channel=channel, status=status_, attempts=1, created_at=when,
                        updated_at=when)
            for i, status_ in enumerate([DeliveryStatus.SENT] * sent
                                        + [DeliveryStatus.FAILED] * failed))
        db.session.commit()


def test_logged_out_visitors_go_to_the_login_page(client):
    answer = client.get("/admin/ops")
    assert answer.status_code == 302 and "/auth/login" in answer.headers["Location"]


def test_the_page_and_its_link_do_not_exist_for_other_users(app, client, auth):
    auth.create()
    auth.login()
    assert client.get("/admin/ops").status_code == 404
    assert client.post("/admin/ops/jobs/x/retry",
                       data={"csrf_token": csrf_token(client, "/dashboard")}).status_code == 404
    assert "/admin/ops" not in client.get("/dashboard").get_data(as_text=True)


def test_admins_find_it_in_the_nav(admin):
    assert 'href="/admin/ops"' in admin.get("/dashboard").get_data(as_text=True)


def test_a_healthy_product_reads_ok_with_the_listener_s_connections_and_lag(app, admin,
                                                                            monkeypatch):
    now = clock.now_ms()
    monkeypatch.setattr(clock, "now_ms", lambda: now)  # a slow request must not age the trade
    beating(app, trade_age_ms=1500, lag_ms=12)
    page = admin.get("/admin/ops").get_data(as_text=True)
    assert "Everything answers." in page and "ops-ok\">ok<" in page
    assert "2 connections · 4 streams · last trade 1.5 s ago · lag 12 ms" in page
    assert '<td data-label="Last trade">1.5 s ago</td>' in page
    assert '<td data-label="Lag">12 ms</td>' in page


def test_what_is_down_is_named(app, admin):
    with app.app_context():
        facts = status.gather()
    assert facts["status"] == "degraded"
    assert "listener shard 0: unknown, heartbeat stale" in facts["problems"]
    assert {"process missing: no live worker", "process missing: no live scheduler"} <= set(
        facts["problems"])
    page = admin.get("/admin/ops").get_data(as_text=True)
    assert "process missing: no live worker" in page


def test_an_open_breaker_shows_with_its_error_and_degrades_the_status(app, admin):
    beating(app)
    with app.app_context():
        gate = delivery_breaker("sms")
        for _ in range(gate.threshold):
            gate.failure("Twilio answered 503")
        Breaker("delivery-dest:9").failure("timeout")  # a destination's, found by its key
        Breaker("delivery-dest:10").success()  # it delivered, and never failed: not news
        facts = status.gather()
    assert facts["problems"] == ["breaker open: delivery-sms (Twilio answered 503)"]
    states = {b["name"]: b["state"] for b in facts["breakers"]}
    assert states["delivery-sms"] == "open" and states["delivery-email"] == "closed"
    assert states["binance"] == "closed" and states["delivery-dest:9"] == "closed"
    assert "delivery-dest:10" not in states
    page = admin.get("/admin/ops").get_data(as_text=True)
    assert "Twilio answered 503" in page and 'ops-bad">open<' in page


def test_a_users_destination_failing_is_shown_but_does_not_degrade_the_install(app, admin):
    """Any user can point a destination at a host that never answers: its breaker opens, and
    the operator sees it, but the install is fine (as /api/v1/health says)."""
    beating(app)
    with app.app_context():
        gate = Breaker("delivery-dest:6")
        for _ in range(gate.threshold):
            gate.failure("Name or service not known")
        facts = status.gather()
    assert {b["name"]: b["state"] for b in facts["breakers"]}["delivery-dest:6"] == "open"
    assert facts["problems"] == [] and facts["status"] == "ok"
    page = admin.get("/admin/ops").get_data(as_text=True)
    assert "Name or service not known" in page
    assert admin.get("/api/v1/health").get_json()["status"] == "ok"


@pytest.mark.both_databases
def test_success_rates_per_channel_over_the_hour_and_the_day(app, admin):
    deliveries(app, "email", sent=3, failed=1)
    deliveries(app, "sms", sent=1, failed=1)
    deliveries(app, "email", sent=0, failed=4, ago=timedelta(hours=3))  # the day's only
    deliveries(app, "dest:4", sent=2, failed=0, ago=timedelta(minutes=40))
    with app.app_context():
        hour = status.gather()["deliveries"]["hour"]
        day = status.gather()["deliveries"]["day"]
        slots = rates.success_rates(rates.HOUR)["email"]
    assert (hour["email"]["rate"], hour["email"]["finished"]) == (0.75, 4)
    assert (hour["sms"]["rate"], hour["destinations"]["rate"]) == (0.5, 1.0)
    assert hour["push"]["rate"] is None
    assert (day["email"]["rate"], day["email"]["finished"]) == (0.375, 8)
    assert len(slots) == 12 and len(day["email"]["slots"]) == 24
    filled = [cell for cell in slots if cell["rate"] is not None]
    assert [(c["ok"], c["failed"]) for c in filled] == [(3, 1)]
    assert slots.index(filled[0]) in (9, 10)  # 10 minutes ago: the third or second slot back
    page = admin.get("/admin/ops").get_data(as_text=True)
    assert "75% of 4" in page and "37.5% of 8" in page
    assert 'aria-label="email: 75% delivered of 4 tried over the last hour, per 5 minutes"' in page
    # the slot where all 4 failed: a full red bar, not the thin mark of a slot with nothing
    assert 'class="rate-bad" x="' in page and 'y="0" width="8" height="42.0"' in page


def deliveries_waiting(app, channel, n, status=DeliveryStatus.RETRYING, attempts=0):
    when = clock.utcnow() - timedelta(minutes=30)
    with app.app_context():
        uid = db.session.scalar(db.select(User.id).where(User.email == ADMIN[0]))
        db.session.add_all(DeliveryLog(notification_id=f"w-{channel}-{i}-{attempts}",
                                       user_id=uid, channel=channel, status=status,
                                       attempts=attempts, created_at=when, updated_at=when)
                           for i in range(n))
        db.session.commit()


def test_deliveries_waiting_behind_a_refusing_provider_are_counted(app, admin, runner):
    """A breaker open defers them without spending attempts: none was tried, yet 198 are
    waiting, which the page and flask status say beside the channel."""
    deliveries_waiting(app, "email", 198)
    deliveries_waiting(app, "dest:3", 2, DeliveryStatus.QUEUED)
    page = admin.get("/admin/ops").get_data(as_text=True)
    assert page.count("198 waiting to go out") == 2  # beside the hour's line and the day's
    assert "2 waiting to go out" in page and "sms" in page
    assert "(198 waiting to go out)" in runner.invoke(args=["status"]).output


@pytest.mark.both_databases
def test_a_provider_refusing_now_shows_in_the_rate_now(app, admin, runner):
    """Deliveries retrying after a failed attempt count against the rate while they wait (the
    drill saw "100% of 24" with SMTP refusing); held back unattempted, they do not."""
    deliveries(app, "email", sent=3, failed=0)
    deliveries_waiting(app, "email", 3, attempts=1)
    deliveries_waiting(app, "email", 5)  # the breaker opened: never tried
    with app.app_context():
        hour = status.gather()["deliveries"]["hour"]
    assert (hour["email"]["rate"], hour["email"]["finished"]) == (0.5, 6)
    page = admin.get("/admin/ops").get_data(as_text=True)
    assert "50% of 6 · <b>8 waiting to go out</b>" in page
    [email] = [line for line in runner.invoke(args=["status"]).output.splitlines()
               if line.strip().startswith("email")]
    assert "50% of 6" in email and "(8 waiting to go out)" in email


def test_one_failure_in_hundreds_never_reads_as_every_one_delivered(app, admin, runner):
    deliveries(app, "email", sent=394, failed=1)
    deliveries(app, "sms", sent=1, failed=9999, ago=timedelta(hours=2))
    page = admin.get("/admin/ops").get_data(as_text=True)
    assert "99.7% of 395" in page and "100% of 395" not in page
    assert "0.1% of 10000" in page  # one of ten thousand went: not 0 %
    assert "email          99.7% of 395" in runner.invoke(args=["status"]).output
    assert [rates.percent(r) for r in (1.0, 0.0, 0.99999, 0.5, None)] == [
        "100%", "0%", "99.9%", "50%", "nothing tried"]


def test_a_failed_job_is_listed_and_retried_through_the_page(app, admin):
    with app.app_context():
        job = enqueue(explode, "quota")
    run_jobs(app)
    with app.app_context():
        assert job.id in FailedJobRegistry("default", connection=rq_connection())
    page = admin.get("/admin/ops").get_data(as_text=True)
    assert "tests.test_ops_page.explode" in page
    assert "RuntimeError: provider said no: quota" in page
    token = csrf_token(admin, "/admin/ops")
    refused = admin.post(f"/admin/ops/jobs/{job.id}/retry", headers={"HX-Request": "true"})
    assert refused.status_code == 400  # no CSRF token
    answer = admin.post(f"/admin/ops/jobs/{job.id}/retry",
                        headers={"HX-Request": "true", "X-CSRFToken": token})
    assert answer.status_code == 200
    fragment = answer.get_data(as_text=True)
    assert 'id="ops"' in fragment and "<html" not in fragment
    assert f"Job {job.id} is queued again." in fragment
    assert "No failed jobs." in fragment
    with app.app_context():
        assert job.id not in FailedJobRegistry("default", connection=rq_connection())
        assert job.id in Queue("default", connection=rq_connection()).job_ids


def test_retrying_a_job_that_is_not_failed_says_so(app, admin):
    token = csrf_token(admin, "/admin/ops")
    answer = admin.post("/admin/ops/jobs/nope/retry", data={"csrf_token": token})
    assert answer.status_code == 303
    assert "Job nope is no longer among the failed jobs." in admin.get(
        "/admin/ops").get_data(as_text=True)


def test_the_htmx_refresh_gets_the_partial_alone(app, admin):
    fragment = admin.get("/admin/ops", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'id="ops"' in fragment and 'hx-trigger="every 10s"' in fragment
    assert "<html" not in fragment
