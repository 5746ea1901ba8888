"""Alerts that insist, against real loopback receivers and a clock the test moves: the rounds
repeat and climb push -> destination -> SMS until someone acknowledges (API, link, inbox)."""

import base64
import json
import logging
import os
import re
from datetime import timedelta
from urllib.parse import parse_qs

import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import AuthActions, csrf_token
from tests.hub import make_user, run_jobs, twilio_answer
from webapp import clock
from webapp.accounts import service as accounts
from webapp.alerts import service as alerts
from webapp.core import secretbox
from webapp.delivery import dispatch
from webapp.delivery.channels import push
from webapp.extensions import db
from webapp.inbox import service as inbox
from webapp.insist import service
from webapp.models import DeliveryLog, Destination, Escalation, Preference, User
from webapp.notify import router
from webapp.preferences import service as preferences

pytestmark = pytest.mark.both_databases
SID = "AC" + "2" * 32
HTMX = {"HX-Request": "true"}


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def world(make_app, http_recorder):
    return make_world(make_app, http_recorder)


def make_world(make_app, http_recorder):
    """A user with a browser subscribed to push, an escalation webhook and a phone number;
    every provider a loopback receiver that counts what it is handed."""
    receivers = {"push": http_recorder(), "hook": http_recorder(), "sms": http_recorder(
        twilio_answer)}
    private, public = push.generate_vapid_keys()
    app = make_app(
        DELIVERY_BACKOFF=0, PUSH_ALLOW_INSECURE_ENDPOINTS=True, DESTINATIONS_ALLOW_PRIVATE=True,
        VAPID_PRIVATE_KEY=private, VAPID_PUBLIC_KEY=public, PUBLIC_URL="http://bell.test",
        TWILIO_ACCOUNT_SID=SID, TWILIO_AUTH_TOKEN="token", TWILIO_FROM="+15005550006",
        TWILIO_API_BASE=receivers["sms"].url)
    uid = make_user(app, "ann@example.com", phone="+14155550100", email_alerts=False)
    # not ACCOUNT_SECURITY: making an API key or signing in must not start reminders here
    set_pref(app, uid, insist_types=["RISK_LIMIT_BREACHED", "SYSTEM_MAINTENANCE"])
    key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    with app.app_context():
        preferences.save_push_subscription(uid, {"endpoint": receivers["push"].url + "/p", "keys": {
            "p256dh": b64(key), "auth": b64(os.urandom(16))}}, "Firefox")
        # SYSTEM_ERROR only: the first delivery leaves it out, the ladder brings it in
        db.session.add(Destination(
            user_id=uid, kind="webhook", name="desk", url_masked="http://127.0.0.1/…",
            url_encrypted=secretbox.encrypt(receivers["hook"].url + "/hook"),
            types=["SYSTEM_ERROR"], escalate=True))
        db.session.commit()
    return app, uid, receivers


def counts(receivers):
    return {name: len(server.requests) for name, server in receivers.items()}


def breach(app, uid, **extra):
    with app.app_context():
        return router.route({"user_id": uid, "type": "RISK_LIMIT_BREACHED", "title": "Leverage 12x",
                             "message": "Over your 10x limit", **extra})[0]


def escalation(app, nid):
    with app.app_context():
        esc = db.session.get(Escalation, nid)
        db.session.expunge_all()
        return esc


def run_at(app, nid, minutes):
    """run_due with the clock `minutes` after the notification, then the delivery jobs."""
    with app.app_context():
        queued = service.run_due(escalation(app, nid).created_at + timedelta(minutes=minutes))
    run_jobs(app)
    return queued


def set_pref(app, uid, **values):
    with app.app_context():
        pref = preferences.preferences_for(uid)
        for name, value in values.items():
            setattr(pref, name, value)
        db.session.commit()


def rounds(app, nid):
    with app.app_context():
        return sorted((r.round, r.channel, r.status) for r in db.session.scalars(
            db.select(DeliveryLog).where(DeliveryLog.notification_id == nid)))


def test_rounds_repeat_every_n_minutes_and_climb_push_destination_sms(world):
    app, uid, receivers = world
    nid = breach(app, uid)
    run_jobs(app)
    assert counts(receivers) == {"push": 1, "hook": 0, "sms": 0}
    esc = escalation(app, nid)
    assert (esc.rounds, esc.max_rounds, esc.every_s, esc.ended) == (0, 5, 300, "")
    assert run_at(app, nid, 4) == 0 and counts(receivers)["push"] == 1  # not due yet
    assert run_at(app, nid, 5) == 1
    assert receivers["push"].wait_for(2) and counts(receivers) == {"push": 2, "hook": 0, "sms": 0}
    assert run_at(app, nid, 10) == 2
    receivers["hook"].wait_for(1)
    assert counts(receivers) == {"push": 3, "hook": 1, "sms": 0}
    assert run_at(app, nid, 15) == 3
    receivers["sms"].wait_for(1)
    assert counts(receivers) == {"push": 4, "hook": 2, "sms": 1}
    assert [(k, ch[:5]) for k, ch, _ in rounds(app, nid) if ch != "push"] == [
        (2, "dest:"), (3, "dest:"), (3, "sms")]
    assert {status for *_, status in rounds(app, nid)} == {"sent"}
    webhook = json.loads(receivers["hook"].requests[-1]["body"])
    assert webhook["title"] == "Reminder 3 of 5: Leverage 12x"
    assert webhook["ack_url"].startswith("http://bell.test/ack/")
    sms = parse_qs(receivers["sms"].requests[0]["body"].decode())["Body"][0]
    assert re.search(r"Ack: http://bell\.test/ack/\S+$", sms) and len(sms) <= 320
    assert escalation(app, nid).rounds == 3


def test_an_api_acknowledgement_stops_the_repeats(world, caplog):
    app, uid, receivers = world
    caplog.set_level(logging.INFO, logger="webapp.insist.service")
    client = app.test_client()
    with app.app_context():
        _, key = accounts.create_api_key(db.session.get(User, uid), "laptop")
    nid = breach(app, uid)
    run_jobs(app)
    run_at(app, nid, 5)
    before = counts(receivers)
    answer = client.post(f"/api/v1/notifications/{nid}/ack", headers={"X-API-Key": key})
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["id"] == nid and body["acknowledged_by"] == "API key 'laptop'"
    assert body["rounds"] == 1 and body["acknowledged_at"].endswith("Z")
    for minutes in (10, 15, 20, 60):
        assert run_at(app, nid, minutes) == 0
    assert counts(receivers) == before
    again = client.post(f"/api/v1/notifications/{nid}/ack", headers={"X-API-Key": key})
    assert again.get_json()["acknowledged_at"] == body["acknowledged_at"]  # the first is kept
    said = [r for r in caplog.records if "insist_acknowledged" in r.getMessage()]
    assert len(said) == 1, said  # the second is no news
    item = client.get(f"/api/v1/notifications/{nid}", headers={"X-API-Key": key}).get_json()
    assert item["insist"] == {"rounds": 1, "max_rounds": 5, "next_at": None,
                              "ended": "acknowledged", "acknowledged_at": body["acknowledged_at"],
                              "acknowledged_by": "API key 'laptop'"}


def test_the_link_acknowledges_only_by_its_form_once(world):
    app, uid, receivers = world
    client = app.test_client()
    nid = breach(app, uid)
    run_jobs(app)
    for minutes in (5, 10, 15):
        run_at(app, nid, minutes)
    [sms] = receivers["sms"].wait_for(1)
    link = re.search(r"Ack: (\S+)$", parse_qs(sms["body"].decode())["Body"][0]).group(1)
    path = link.removeprefix("http://bell.test")
    page = client.get(path)  # what a mail scanner does
    assert page.status_code == 200 and "Leverage 12x" in page.get_data(as_text=True)
    assert '<button type="submit">Acknowledge</button>' in page.get_data(as_text=True)
    assert escalation(app, nid).acked_at is None
    assert client.post(path).status_code == 400  # no CSRF token: refused
    assert escalation(app, nid).acked_at is None
    done = client.post(path, data={"csrf_token": csrf_token(client, path)})
    assert done.status_code == 200 and "Acknowledged." in done.get_data(as_text=True)
    assert escalation(app, nid).acked_by == "link in the SMS"
    assert run_at(app, nid, 20) == 0 and counts(receivers)["sms"] == 1
    second = client.get(path).get_data(as_text=True)
    assert "Already acknowledged." in second and "By link in the SMS" in second
    assert "<form" not in second.split("<main", 1)[-1].split("</main>")[0]
    tampered = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    assert client.get(tampered).status_code == 404
    assert client.post(tampered, data={"csrf_token": csrf_token(client, path)}).status_code == 404


def test_the_inbox_button_acknowledges_and_the_item_says_by_whom(world):
    app, uid, receivers = world
    client = app.test_client()
    nid = breach(app, uid)
    run_jobs(app)

    AuthActions(client, app).login("ann@example.com")
    page = client.get("/notifications/").get_data(as_text=True)
    assert f'hx-post="/notifications/{nid}/ack"' in page
    token = csrf_token(client, "/notifications/")
    item = client.post(f"/notifications/{nid}/ack", headers={"X-CSRFToken": token, **HTMX})
    html = item.get_data(as_text=True)
    assert item.status_code == 200 and html.startswith(f'<li id="n-{nid}"')
    assert "Acknowledged by ann@example.com on the web at" in html and "/ack\"" not in html
    assert run_at(app, nid, 5) == 0 and counts(receivers)["push"] == 1
    audit = client.get("/audit").get_data(as_text=True)
    assert "Leverage 12x" in audit and "0 of 5" in audit
    assert "by ann@example.com on the web" in audit


def test_acknowledged_before_the_slow_steps_ran_stays_acknowledged(world):
    app, uid, receivers = world
    nid = breach(app, uid)  # stored; its slow steps wait in the queue
    with app.app_context():
        esc = service.ack(uid, nid, "link in the email")
        assert (esc.ended, esc.rounds) == ("acknowledged", 0)
    run_jobs(app)  # plan.record -> start(): the row is there already
    esc = escalation(app, nid)
    assert (esc.ended, esc.acked_by, esc.next_at) == ("acknowledged", "link in the email", None)
    assert run_at(app, nid, 5) == 0 and counts(receivers)["push"] == 1


def test_it_stops_after_m_rounds(world):
    app, uid, receivers = world
    set_pref(app, uid, insist_rounds=2, insist_every_min=1)
    nid = breach(app, uid)
    run_jobs(app)
    assert [run_at(app, nid, m) for m in (1, 2, 3, 4)] == [1, 2, 0, 0]
    esc = escalation(app, nid)
    assert (esc.rounds, esc.ended, esc.next_at) == (2, "exhausted", None)
    receivers["hook"].wait_for(1)
    assert counts(receivers) == {"push": 3, "hook": 1, "sms": 0}


def test_it_ends_at_expiry(world):
    app, uid, receivers = world
    nid = breach(app, uid)
    run_jobs(app)
    assert run_at(app, nid, 7 * 24 * 60 + 1) == 0
    assert escalation(app, nid).ended == "expired"
    assert run_at(app, nid, 7 * 24 * 60 + 10) == 0 and counts(receivers)["push"] == 1


def test_deleting_the_notification_stops_its_reminders(world):
    """The README: reminders stop when the notification leaves the inbox. Deleted, each
    round had gone on as a failed delivery ("deleted before it could be sent")."""
    app, uid, receivers = world
    nid = breach(app, uid)
    run_jobs(app)
    assert run_at(app, nid, 5) == 1
    with app.app_context():
        inbox.delete(uid, nid)
    assert [run_at(app, nid, m) for m in (10, 15)] == [0, 0]
    esc = escalation(app, nid)
    assert (esc.rounds, esc.ended, esc.next_at) == (1, "deleted", None)
    assert [r for r in rounds(app, nid) if r[2] != "sent"] == []


def test_a_round_goes_when_redis_cannot_say_whether_the_notification_is_still_there(
        world, monkeypatch):
    """Asking the inbox must not stop the run (and every escalation due after this one)."""
    app, uid, receivers = world
    nid = breach(app, uid)
    run_jobs(app)

    def away(*_args, **_kwargs):
        raise redis.ConnectionError("a failover")

    monkeypatch.setattr(inbox, "get", away)
    assert run_at(app, nid, 5) == 1
    assert escalation(app, nid).ended == ""


def test_quiet_hours_put_off_a_non_critical_round_not_a_critical_one(world):
    app, uid, receivers = world
    now = clock.utcnow()
    set_pref(app, uid, quiet_start=(now - timedelta(hours=1)).strftime("%H:%M"),
             quiet_end=(now + timedelta(hours=2)).strftime("%H:%M"))
    urgent, critical = breach(app, uid), breach(app, uid, type="SYSTEM_MAINTENANCE")
    run_jobs(app)
    assert run_at(app, critical, 5) == 2  # the critical one's round: its email and push
    assert escalation(app, critical).rounds == 1
    held = escalation(app, urgent)
    assert held.rounds == 0 and held.next_at > held.created_at + timedelta(minutes=100)
    with app.app_context():  # the first reminder comes N minutes after the held original
        quiet_end = preferences.quiet_until(preferences.preferences_for(uid), now)
    assert held.next_at == quiet_end.replace(tzinfo=None) + timedelta(seconds=held.every_s)
    assert not [r for r in rounds(app, urgent) if r[0] > 0]
    with app.app_context():
        service.run_due(held.next_at - timedelta(minutes=1))
        assert escalation(app, urgent).rounds == 0
        service.run_due(held.next_at)  # quiet hours over
    assert escalation(app, urgent).rounds == 1
    assert [r[:2] for r in rounds(app, urgent) if r[0] > 0] == [(1, "push")]


def test_two_runs_racing_send_a_round_once(world):
    app, uid, receivers = world
    nid = breach(app, uid)
    run_jobs(app)
    at = escalation(app, nid).created_at + timedelta(minutes=10)
    # two runs, each with its own session, both read the due escalation before either sends
    with app.app_context():
        seen_by_a = service.due(at)
        with app.app_context():
            seen_by_b = service.due(at)
            assert [e.rounds for e in seen_by_a] == [e.rounds for e in seen_by_b] == [0]
            assert sum(service.advance(esc, at) for esc in seen_by_b) == 1
        assert sum(service.advance(esc, at) for esc in seen_by_a) == 0
    run_jobs(app)
    assert [r[:2] for r in rounds(app, nid)] == [(0, "push"), (1, "push")]
    receivers["push"].wait_for(2)
    assert counts(receivers)["push"] == 2


def test_another_users_notification_is_404_and_nothing_changes(world):
    app, uid, receivers = world
    client = app.test_client()
    nid = breach(app, uid)
    run_jobs(app)
    make_user(app, "mallory@example.com")

    mallory = AuthActions(client, app)
    key = mallory.api_key("mallory@example.com")
    for bad in (nid, "1-0-999", "x" * 5000, "%ED%B2%80", "-1", "NaN"):
        answer = client.post(f"/api/v1/notifications/{bad}/ack", headers={"X-API-Key": key})
        assert answer.status_code == 404 and answer.get_json()["error"] == "not_found"
    mallory.login("mallory@example.com")
    token = csrf_token(client, "/notifications/")
    assert client.post(f"/notifications/{nid}/ack",
                       headers={"X-CSRFToken": token, **HTMX}).status_code == 404
    esc = escalation(app, nid)
    assert (esc.acked_at, esc.ended) == (None, "")
    assert app.test_client().post(f"/api/v1/notifications/{nid}/ack").status_code == 401
    assert client.post(f"/notifications/{nid}/ack", headers=HTMX).status_code == 400  # no CSRF


def test_a_type_that_does_not_insist_answers_409(world):
    app, uid, _ = world
    client = app.test_client()
    with app.app_context():
        nid = router.route({"user_id": uid, "type": "PRICE_ALERT", "title": "BTC 70k"})[0]
        _, key = accounts.create_api_key(db.session.get(User, uid), "k")
    run_jobs(app)
    answer = client.post(f"/api/v1/notifications/{nid}/ack", headers={"X-API-Key": key})
    assert answer.status_code == 409
    assert "PRICE_ALERT notifications do not ask" in answer.get_json()["detail"]
    assert escalation(app, nid) is None
    item = client.get(f"/api/v1/notifications/{nid}", headers={"X-API-Key": key}).get_json()
    assert item["insist"] is None


def test_a_user_chooses_which_types_insist(world):
    app, uid, receivers = world
    set_pref(app, uid, insist_types=["PRICE_ALERT"], insist_every_min=2)
    urgent = breach(app, uid)
    with app.app_context():
        price = router.route({"user_id": uid, "type": "PRICE_ALERT", "title": "BTC 70k"})[0]
    run_jobs(app)
    assert escalation(app, urgent) is None and escalation(app, price).every_s == 120
    with app.app_context():
        assert service.insisting_types(Preference(insist_types=None)) >= {
            "RISK_LIMIT_BREACHED", "ACCOUNT_SECURITY"}


def test_reminders_queued_but_not_out_when_acknowledged_are_skipped(world):
    app, uid, receivers = world
    nid = breach(app, uid)
    run_jobs(app)
    with app.app_context():
        at = db.session.get(Escalation, nid).created_at + timedelta(minutes=5)
        assert service.run_due(at) == 1  # round 1's push, queued
        service.ack(uid, nid, "link in the SMS")
    run_jobs(app)
    assert rounds(app, nid) == [(0, "push", "sent"), (1, "push", "skipped")]
    assert counts(receivers)["push"] == 1


def test_a_reminder_still_waiting_when_the_next_round_goes_is_dropped(world):
    """Retried past its round (a provider greylisting), "Reminder 1" would come after
    "Reminder 2" and say less: the later round went on its channels and more."""
    app, uid, receivers = world
    nid = breach(app, uid)
    run_jobs(app)
    with app.app_context():
        created = db.session.get(Escalation, nid).created_at
        assert service.run_due(created + timedelta(minutes=5)) == 1  # round 1: not out yet
        assert service.run_due(created + timedelta(minutes=10)) >= 1  # round 2
    run_jobs(app)
    got = rounds(app, nid)
    assert (1, "push", "skipped") in got and (2, "push", "sent") in got, got
    assert counts(receivers)["push"] == 2  # the first delivery and round 2
    with app.app_context():  # one being sent as round 3 went, its send failing: not retried
        row = db.session.scalars(db.select(DeliveryLog).where(
            DeliveryLog.notification_id == nid, DeliveryLog.round == 2)).first()
        row.status, row.attempts = "sending", 1
        db.session.commit()
        assert service.run_due(created + timedelta(minutes=15)) >= 1
        assert dispatch._failed_attempt(row, ConnectionError("503")) == "skipped"
        assert "reminder 3 went out" in row.error


def test_a_type_that_never_goes_by_sms_climbs_no_sms_rung(world):
    """SYSTEM_MAINTENANCE (a broadcast to everyone) insists here, but has no SMS toggle:
    its reminders climb to push and the destination, never to a paid SMS."""
    app, uid, receivers = world
    with app.app_context():
        nid = router.route({"user_id": uid, "type": "SYSTEM_MAINTENANCE",
                            "title": "Maintenance at 02:00", "message": "30 minutes"})[0]
    run_jobs(app)
    # push and email (critical: always emailed), then the destination; no SMS at round 3
    assert [run_at(app, nid, m) for m in (5, 10, 15, 20)] == [2, 3, 3, 3]
    assert counts(receivers)["sms"] == 0
    assert "sms" not in {channel for _, channel, _ in rounds(app, nid)}


@pytest.mark.parametrize(("named", "reached"), [
    ([], {"push": 0, "hook": 0, "sms": 0}),  # the inbox and the live feed only: no reminder
    (["push"], {"push": 4, "hook": 0, "sms": 0}),
])
def test_an_alert_that_names_its_channels_keeps_its_reminders_to_them(world, named, reached):
    """"Sends its notifications there and nowhere else": the ladder's steps too."""
    app, uid, receivers = world
    set_pref(app, uid, insist_types=["PRICE_ALERT"])
    with app.app_context():
        alert = alerts.create_alert(uid, {"symbol": "BTCUSDT", "condition": "above",
                                          "target": 1e9, "channels": named})
        db.session.commit()
        nid = router.route({"user_id": uid, "type": "PRICE_ALERT", "title": "BTCUSDT above",
                            "message": "traded", "alert_id": str(alert.id)})[0]
    run_jobs(app)
    with app.app_context():  # deleted once it fired: its list still bounds the reminders
        alerts.delete_alert(uid, alert.id)
    for minutes in (5, 10, 15):
        run_at(app, nid, minutes)
    if reached["push"]:
        receivers["push"].wait_for(reached["push"])
    assert counts(receivers) == reached
    assert escalation(app, nid).rounds == 3
