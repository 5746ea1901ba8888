"""The router's decisions: registry, quiet hours, per-minute limit, critical, idempotency."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time

from tests.hub import make_user, run_jobs
from webapp import keys
from webapp.core.queues import get_queue
from webapp.delivery import plan
from webapp.delivery.sweep import sweep
from webapp.exceptions import InvalidInput
from webapp.extensions import db, get_redis
from webapp.inbox import service as inbox
from webapp.models import CriticalNotification, DeliveryLog
from webapp.notify import router
from webapp.notify import types as notification_types
from webapp.preferences import service as preferences

pytestmark = pytest.mark.both_databases
BERLIN = ZoneInfo("Europe/Berlin")


def ms(dt):
    return int(dt.timestamp() * 1000)


def berlin(day, hour, minute=0):
    """A fixed local clock years ahead, so real-time key expiry never interferes."""
    return datetime(2030, 1, day, hour, minute, tzinfo=BERLIN)


def smtp(box):
    return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": box.port, "SMTP_TLS": "none"}


def statuses(app, nid):
    with app.app_context():
        return {r.channel: r.status for r in db.session.scalars(
            db.select(DeliveryLog).where(DeliveryLog.notification_id == nid))}


def route(app, uid, when, **extra):
    with app.app_context():
        return router.route({"user_id": uid, "type": "PRICE_ALERT", "title": "BTC up",
                             **extra}, now_ms=ms(when))[0]


def test_registry_holds_the_briefs_types():
    assert set(notification_types.TYPES) == {
        "PRICE_ALERT", "VOLUME_ALERT", "ORDER_EXECUTED", "ORDER_EXECUTION_FAILED",
        "STRATEGY_STATUS", "STRATEGY_PERFORMANCE", "RISK_VIOLATION", "RISK_LIMIT_BREACHED",
        "BROKER_DISCONNECTED", "SYSTEM_ERROR", "ACCOUNT_SECURITY", "REGULATORY_NOTICE",
        "SYSTEM_MAINTENANCE", "WEBHOOK_ALERT"}
    assert notification_types.CRITICAL_TYPES == {
        "RISK_VIOLATION", "ACCOUNT_SECURITY", "REGULATORY_NOTICE", "SYSTEM_MAINTENANCE"}
    assert notification_types.URGENT_TYPES == {
        "ORDER_EXECUTION_FAILED", "RISK_LIMIT_BREACHED", "BROKER_DISCONNECTED"}


def test_quiet_hours_hold_until_they_end_in_the_users_zone(make_app, smtp_server):
    app = make_app(**smtp(smtp_server))
    uid = make_user(app, "q@example.com", timezone="Europe/Berlin", quiet_start="22:00",
                    quiet_end="07:00")
    nid = route(app, uid, berlin(15, 23, 30))
    run_jobs(app)
    assert statuses(app, nid) == {"email": "held"}
    with app.app_context():
        row = db.session.scalar(db.select(DeliveryLog).filter_by(notification_id=nid))
        assert row.next_attempt_at == datetime(2030, 1, 16, 6, 0)  # 07:00 in Berlin, in UTC
        assert sweep(now=datetime(2030, 1, 16, 5, 59)) == 0
        assert sweep(now=datetime(2030, 1, 16, 6, 0)) == 1
    run_jobs(app)
    assert statuses(app, nid) == {"email": "sent"}
    assert len(smtp_server.wait_for(1)) == 1


def test_outside_quiet_hours_goes_at_once(make_app, smtp_server):
    app = make_app(**smtp(smtp_server))
    uid = make_user(app, "r@example.com", timezone="Europe/Berlin", quiet_start="22:00",
                    quiet_end="07:00")
    nid = route(app, uid, berlin(15, 7, 0))
    run_jobs(app)
    assert statuses(app, nid) == {"email": "sent"}


def test_over_the_per_minute_limit_waits_for_the_digest(app):
    uid = make_user(app, "s@example.com", max_per_minute="3")
    start = berlin(15, 12)
    nids = [route(app, uid, start.replace(second=i)) for i in range(5)]
    run_jobs(app)  # no SMTP configured: what goes out lands in the outbox
    assert [statuses(app, n)["email"] for n in nids] == ["outbox"] * 3 + ["digest"] * 2
    with freeze_time(datetime.now(UTC) + timedelta(seconds=61), tick=True):  # a minute on
        later = route(app, uid, start.replace(minute=1, second=1))
        run_jobs(app)
    assert statuses(app, later) == {"email": "outbox"}
    with app.app_context():
        assert len(inbox.list_page(uid, now_ms=ms(start))[0]) == 6  # the inbox keeps all


def test_a_notification_planned_late_counts_in_the_minute_it_goes_out(app):
    """Made 90 s ago, its batch held up (a locked database, the safety net's minute): it
    goes out now, beside this minute's three, so it waits for the digest (the re-drill: 20
    emails in 29 s for a limit of 10)."""
    uid = make_user(app, "late@example.com", max_per_minute="3")
    now = datetime.now(UTC)
    sent = [route(app, uid, now) for _ in range(3)]
    late = route(app, uid, now - timedelta(seconds=90))
    run_jobs(app)
    assert [statuses(app, n)["email"] for n in sent] == ["outbox"] * 3
    assert statuses(app, late) == {"email": "digest"}


def test_the_limit_holds_in_every_minute_whatever_order_they_are_planned_in(app):
    """Several workers plan at once, each with its own clock and in its own order: a delivery
    counted at a time before others already counted must not slip past a minute already full
    after it (the drill: 11 and 12 emails in a minute for a limit of 10)."""
    uid = make_user(app, "order@example.com", max_per_minute="3")
    with app.app_context():
        pref = preferences.preferences_for(uid)
        t0 = 1_800_000_000_000
        assert [plan.over_limit(pref, f"n{s}", t0 + s * 1000) for s in (10, 20, 30)] == [
            False] * 3
        assert plan.over_limit(pref, "n5", t0 + 5_000)  # the minute from 5 s holds 3 after
        assert plan.over_limit(pref, "n69", t0 + 69_000)  # the minute up to it holds 3
        assert not plan.over_limit(pref, "n71", t0 + 71_000)  # the one up to 71 s: 20, 30
        assert plan.over_limit(pref, "n72", t0 + 72_000)  # 20, 30, 71 s
        assert not plan.over_limit(pref, "n10", t0 + 10_000)  # planned again: counted once
        late = t0 + 300_000  # a notification planned after a later one, minutes late
        assert not plan.over_limit(pref, "m600", late + 300_000)
        assert not plan.over_limit(pref, "m0", late)
        assert not plan.over_limit(pref, "m1", late + 1_000)
        assert plan.over_limit(pref, "m2", late + 2_000) is False
        assert plan.over_limit(pref, "m3", late + 3_000)  # the minute from m0 holds three


def test_critical_always_goes_out(make_app, smtp_server):
    app = make_app(**smtp(smtp_server))
    uid = make_user(app, "t@example.com", timezone="Europe/Berlin", quiet_start="00:00",
                    quiet_end="23:59", max_per_minute="1", email_alerts=False)
    for second in range(3):
        route(app, uid, berlin(15, 12, 0).replace(second=second))
    nid = route(app, uid, berlin(15, 12, 0).replace(second=5), type="RISK_VIOLATION",
                title="Exposure over limit")
    run_jobs(app)
    assert statuses(app, nid) == {"email": "sent"}
    [mail] = smtp_server.wait_for(1)
    assert mail["msg"]["Subject"] == "[Critical] Risk violation: Exposure over limit"
    with app.app_context():
        row = db.session.get(CriticalNotification, nid)
        assert row.expires_at.year == 2031 and row.type == "RISK_VIOLATION"


def test_low_priority_and_toggled_off_types_stay_in_the_inbox(app):
    uid = make_user(app, "u@example.com", rt_order_execution=False)
    quiet = route(app, uid, berlin(15, 12), priority="low")
    off = route(app, uid, berlin(15, 12), type="ORDER_EXECUTED")
    run_jobs(app)
    assert statuses(app, quiet) == {} and statuses(app, off) == {}


def test_slow_steps_are_idempotent_by_notification_id(app):
    uid = make_user(app, "v@example.com", phone="+14155550100", sms_account_security=True)
    nid = route(app, uid, berlin(15, 12), type="ACCOUNT_SECURITY", title="New sign-in")
    run_jobs(app)
    with app.app_context():
        router.route_fired([(nid, uid)])  # a redelivered slow-path entry
        router.route_fired([(nid, uid)])
        assert db.session.scalar(db.select(db.func.count(DeliveryLog.id))) == 2
        assert db.session.scalar(db.select(db.func.count(CriticalNotification.id))) == 1


def test_route_fired_plans_deliveries_for_a_matcher_notification(app):
    uid = make_user(app, "w@example.com")
    with app.app_context():
        nid, _ = inbox.store({"user_id": uid, "type": "PRICE_ALERT", "title": "ETH above 3k",
                              "alert_id": "3"}, now_ms=ms(datetime.now(UTC)))
        assert router.route_fired([(nid, uid)]) == [1]
        gone = f"1-0-{uid}"  # deleted or expired: nothing to do
        assert router.route_fired([(gone, uid)]) == []
    assert statuses(app, nid) == {"email": "queued"}


def test_route_many_stores_all_or_nothing(app):
    uid = make_user(app, "x@example.com")
    good = {"user_id": uid, "type": "PRICE_ALERT", "title": "BTC up"}
    with app.app_context():
        with pytest.raises(InvalidInput):
            router.route_many([good, {**good, "title": ""}])
        assert inbox.list_page(uid)[0] == []
        assert [nid for nid, _ in router.route_many([good, good])] != []
        assert len(inbox.list_page(uid)[0]) == 2


def test_one_bad_notification_leaves_the_rest_of_its_batch_done(app):
    uid = make_user(app, "y@example.com")
    at = ms(berlin(15, 12))
    batch = [{"id": str(n), "user_id": uid, "type": "RISK_VIOLATION", "priority": "critical",
              "title": f"limit {n}", "message": "", "data": {}, "created_at": at}
             for n in (900001, 900002, 900003)]
    batch[1]["created_at"] = "not a time"
    with app.app_context():
        with pytest.raises(RuntimeError, match="900002"):
            router.process_batch(batch)
        rows = db.session.scalars(db.select(CriticalNotification.id)).all()
        assert sorted(rows) == ["900001", "900003"]
        assert db.session.scalar(db.select(db.func.count(DeliveryLog.id))) == 2


def test_quiet_hours_saved_with_non_ascii_digits_do_not_break_routing(app):
    uid = make_user(app, "z@example.com")
    with app.app_context():  # a row saved before the form took ASCII digits only
        pref = preferences.preferences_for(uid)
        pref.quiet_start, pref.quiet_end = "1\u0662:00", "07:00"
        db.session.commit()
    nid = route(app, uid, berlin(15, 12))
    run_jobs(app)
    assert statuses(app, nid) == {"email": "outbox"}


def test_slow_steps_wait_in_a_stream_and_flask_worker_runs_the_retry_scheduler(app, runner):
    uid = make_user(app, "r2@example.com")
    nid = route(app, uid, berlin(15, 12))
    with app.app_context():
        assert get_redis().xlen(keys.routed("default")) == 1
        assert len(get_queue().jobs) == 1  # the drain job the first batch kicked
        # A retry waits in RQ's scheduled registry; only a worker with the scheduler moves it.
        waiting = get_queue().enqueue_at(datetime.now(UTC) - timedelta(seconds=1),
                                         router.process_batch, [])
    result = runner.invoke(args=["worker", "--burst"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert waiting.get_status(refresh=True) == "finished"
        assert statuses(app, nid) == {"email": "outbox"}


def test_route_fired_plans_a_batch_by_each_users_settings(app):
    keen = make_user(app, "keen@example.com", max_per_minute=3)
    muted = make_user(app, "muted@example.com", email_alerts=False)
    now = ms(datetime.now(UTC))
    with app.app_context():
        fired = [(inbox.store({"user_id": uid, "type": "PRICE_ALERT", "title": f"t{i}"},
                              now_ms=now + i)[0], uid)
                 for i in range(5) for uid in (keen, muted)]
        fired.append((f"{now}-0-{keen}", keen))  # never stored: skipped
        queued = router.route_fired(fired)
        assert router.route_fired(fired) == queued  # a redelivered slow-path entry: no new rows
        assert db.session.scalar(db.select(db.func.count(DeliveryLog.id))) == 5
    plans = [statuses(app, nid) for nid, uid in fired[:-1] if uid == keen]
    assert plans == [{"email": "queued"}] * 3 + [{"email": "digest"}] * 2
    assert all(statuses(app, nid) == {} for nid, uid in fired if uid == muted)
    assert len(queued) == 3
