"""External deliveries against real loopback servers: SMTP, Twilio's REST API, Web Push."""

import base64
import json
import os
import re
import socket
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import http_ece
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.hub import make_user, poll, run_jobs, twilio_answer
from webapp import clock
from webapp.delivery import dispatch
from webapp.delivery.channels import push
from webapp.delivery.dispatch import breaker
from webapp.delivery.stats import delivery_stats
from webapp.delivery.sweep import sweep
from webapp.extensions import db
from webapp.models import DeliveryLog, PushSubscription
from webapp.notify import router
from webapp.preferences import service as preferences

pytestmark = pytest.mark.both_databases
SID = "AC" + "1" * 32


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def providers(smtp=None, twilio=None, **extra):
    config = {"DELIVERY_BACKOFF": 0, "DELIVERY_BREAKER_THRESHOLD": 2,
              "DELIVERY_BREAKER_RESET": 0.3, "PUSH_ALLOW_INSECURE_ENDPOINTS": True, **extra}
    if smtp:
        config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp.port, SMTP_TLS="none",
                      MAIL_FROM="Tickerbell <bell@tickerbell.test>")
    if twilio:
        config.update(TWILIO_ACCOUNT_SID=SID, TWILIO_AUTH_TOKEN="secret-token",
                      TWILIO_FROM="+15005550006", TWILIO_API_BASE=twilio.url)
    return config


def logs(app, **where):
    with app.app_context():
        rows = db.session.scalars(db.select(DeliveryLog).filter_by(**where)
                                  .order_by(DeliveryLog.id)).all()
        db.session.expunge_all()
        return rows


def send(app, **notification):
    with app.app_context():
        return router.route({"type": "PRICE_ALERT", "title": "t", "message": "m",
                             **notification})[0]


def test_alert_email_is_multipart_with_escaped_html(make_app, smtp_server):
    app = make_app(**providers(smtp=smtp_server))
    uid = make_user(app, "ann@example.com", delivery_email="desk@example.com")
    nid = send(app, user_id=uid, title="BTCUSDT above 65000 <script>alert(1)</script>",
               message="Traded at 65010.5 & rising", data={"symbol": "BTCUSDT"})
    run_jobs(app)
    [mail] = smtp_server.wait_for(1)
    msg = mail["msg"]
    assert mail["rcpt"] == ["desk@example.com"]
    assert msg["From"] == "Tickerbell <bell@tickerbell.test>"
    assert msg["Subject"] == "Price alert: BTCUSDT above 65000 <script>alert(1)</script>"
    assert msg["X-Tickerbell-Notification"] == nid and msg["Message-ID"]
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "<script>alert(1)</script>" in text and "Traded at 65010.5 & rising" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    assert "Traded at 65010.5 &amp; rising" in html
    [row] = logs(app, notification_id=nid)
    assert (row.channel, row.status, row.attempts) == ("email", "sent", 1)
    assert row.provider_id == msg["Message-ID"].strip()
    with app.app_context():  # made again (sent again after a worker died): a client shows one
        assert dispatch.build(row)["Message-ID"] == msg["Message-ID"]
    send(app, user_id=uid, title="BTCUSDT above 66000")
    run_jobs(app)
    assert smtp_server.wait_for(2)[1]["msg"]["Message-ID"] != msg["Message-ID"]


def test_urgent_sms_goes_through_twilio_rest(make_app, http_recorder):
    twilio = http_recorder(twilio_answer)
    app = make_app(**providers(twilio=twilio))
    uid = make_user(app, "bob@example.com", phone="+44 7700 900123", sms_order_failures=True,
                    email_alerts=False)
    nid = send(app, user_id=uid, type="ORDER_EXECUTION_FAILED", title="Order 42 failed",
               message="Insufficient margin")
    run_jobs(app)
    [request] = twilio.wait_for(1)
    assert request["path"] == f"/2010-04-01/Accounts/{SID}/Messages.json"
    auth = base64.b64decode(request["headers"]["authorization"].split()[1]).decode()
    assert auth == f"{SID}:secret-token"
    form = parse_qs(request["body"].decode())
    assert form["To"] == ["+447700900123"] and form["From"] == ["+15005550006"]
    assert "Order 42 failed" in form["Body"][0] and "Insufficient margin" in form["Body"][0]
    [row] = logs(app, notification_id=nid)
    assert (row.channel, row.status, row.provider_id) == ("sms", "sent", "SM" + "0" * 31 + "1")


def test_sms_is_only_sent_when_the_user_opted_in(make_app, http_recorder):
    twilio = http_recorder(twilio_answer)
    app = make_app(**providers(twilio=twilio))
    uid = make_user(app, "cy@example.com", phone="+14155550100", email_alerts=False)
    nid = send(app, user_id=uid, type="RISK_LIMIT_BREACHED", title="Limit")
    run_jobs(app)
    assert logs(app, notification_id=nid) == [] and twilio.requests == []


def vapid_app(make_app, **extra):
    """An app with a VAPID key pair made for it: push is configured."""
    private, public = push.generate_vapid_keys()
    return make_app(**providers(VAPID_PRIVATE_KEY=private, VAPID_PUBLIC_KEY=public, **extra))


def subscriber(app, uid, endpoint):
    """A browser's push keys, made for real: the test can decrypt what the server sends."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.X962,
                                           serialization.PublicFormat.UncompressedPoint)
    auth = os.urandom(16)
    with app.app_context():
        preferences.save_push_subscription(uid, {"endpoint": endpoint, "keys": {
            "p256dh": b64(public), "auth": b64(auth)}}, "Firefox test")
    return key, auth


def test_web_push_payload_decrypts_with_the_subscription_keys(make_app, http_recorder):
    service = http_recorder()
    app = vapid_app(make_app)
    uid = make_user(app, "dee@example.com", email_alerts=False)
    key, auth = subscriber(app, uid, service.url + "/push/device-1")
    nid = send(app, user_id=uid, title="ETHUSDT below 3000", message="Traded at 2999")
    run_jobs(app)
    [request] = service.wait_for(1)
    assert request["path"] == "/push/device-1"
    assert request["headers"]["content-encoding"] == "aes128gcm"
    assert request["headers"]["authorization"].startswith("vapid t=")
    assert app.config["VAPID_PUBLIC_KEY"] in request["headers"]["authorization"]
    plain = http_ece.decrypt(request["body"], private_key=key, auth_secret=auth,
                             version="aes128gcm")
    payload = json.loads(plain)
    assert payload["title"] == "ETHUSDT below 3000" and payload["id"] == nid
    assert payload["body"] == "Traded at 2999"
    [row] = logs(app, notification_id=nid)
    assert (row.channel, row.status) == ("push", "sent")


def test_gone_push_subscription_is_removed(make_app, http_recorder):
    service = http_recorder(status=410)
    app = vapid_app(make_app)
    uid = make_user(app, "eve@example.com", email_alerts=False)
    subscriber(app, uid, service.url + "/push/old")
    nid = send(app, user_id=uid)
    run_jobs(app)
    [row] = logs(app, notification_id=nid)
    assert row.status == "failed" and "expired" in row.error
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(PushSubscription.id))) == 0


def test_push_never_posts_to_a_local_endpoint_saved_before_the_check(make_app, http_recorder):
    service = http_recorder()
    app = vapid_app(make_app)
    uid = make_user(app, "old@example.com", email_alerts=False)
    subscriber(app, uid, service.url + "/push/legacy")
    app.config["PUSH_ALLOW_INSECURE_ENDPOINTS"] = False  # as in production
    nid = send(app, user_id=uid)
    run_jobs(app)
    [row] = logs(app, notification_id=nid)
    assert row.status == "failed" and service.requests == []
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(PushSubscription.id))) == 0


def test_push_never_reaches_an_endpoint_whose_name_resolves_inwards_when_sending(
        make_app, monkeypatch):
    """A public-looking name checked when saved (names are not resolved then) that resolves
    to this machine when the push goes out: no connection, the delivery refused saying why,
    the device kept (a resolver's passing answer must not forget every user's device). The
    resolver stands for a DNS server."""
    inside = socket.create_server(("127.0.0.1", 0))
    real = socket.getaddrinfo

    def resolver(host, *args, **kwargs):
        if host != "push.rebind.example":
            return real(host, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", inside.getsockname())]

    app = vapid_app(make_app)
    uid = make_user(app, "dns@example.com", email_alerts=False)
    subscriber(app, uid, "https://push.rebind.example/push/x")
    app.config["PUSH_ALLOW_INSECURE_ENDPOINTS"] = False  # as in production
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    nid = send(app, user_id=uid)
    run_jobs(app)
    [row] = logs(app, notification_id=nid)
    assert row.status == "failed" and "private or loopback" in row.error, row.error
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(PushSubscription.id))) == 1
    inside.settimeout(0)
    with pytest.raises(BlockingIOError):  # nothing connected to it
        inside.accept()
    inside.close()


def test_push_does_not_follow_a_redirect(make_app, http_recorder):
    service, inside = http_recorder(status=307), http_recorder()
    service.headers = {"Location": inside.url + "/admin"}
    app = vapid_app(make_app)
    uid = make_user(app, "hop@example.com", email_alerts=False)
    subscriber(app, uid, service.url + "/push/hop")
    nid = send(app, user_id=uid)
    run_jobs(app)
    assert len(service.wait_for(1)) == 1 and inside.requests == []
    [row] = logs(app, notification_id=nid)
    assert row.status == "retrying" and "redirect" in row.error.lower(), row.error


def test_an_email_gives_the_time_in_the_user_s_zone(app, tmp_path):
    uid = make_user(app, "gil@example.com", timezone="Asia/Tokyo")
    nid = send(app, user_id=uid)
    run_jobs(app)
    created = datetime.fromtimestamp(int(nid.split("-")[0]) / 1000, UTC)
    eml = next((tmp_path / "instance" / "outbox").glob("*-email.eml")).read_text()
    tokyo = created.astimezone(ZoneInfo("Asia/Tokyo")).strftime("%Y-%m-%d %H:%M JST (Asia/Tokyo)")
    assert tokyo in eml and created.strftime("%H:%M UTC") not in eml


def test_unconfigured_providers_write_the_outbox(app, tmp_path):
    uid = make_user(app, "fay@example.com", phone="+14155550100", sms_account_security=True)
    nid = send(app, user_id=uid, type="ACCOUNT_SECURITY", title="New sign-in")
    run_jobs(app)
    rows = logs(app, notification_id=nid)
    assert sorted((r.channel, r.status) for r in rows) == [("email", "outbox"), ("sms", "outbox")]
    outbox = tmp_path / "instance" / "outbox"
    files = sorted(p.name for p in outbox.iterdir())
    assert {r.provider_id for r in rows} == set(files)
    eml = next(outbox.glob("*-email.eml")).read_text()
    assert "Subject: [Critical] Account security: New sign-in" in eml
    assert json.loads(next(outbox.glob("*-sms.json")).read_text())["to"] == "+14155550100"


def test_failing_provider_retries_opens_the_breaker_and_recovers(make_app, http_recorder):
    twilio = http_recorder(twilio_answer)
    twilio.failures = 4
    # open for 2 s: the step right after must find it still open on a loaded machine
    app = make_app(**providers(twilio=twilio, DELIVERY_BREAKER_RESET=2.0))
    uid = make_user(app, "gus@example.com", phone="+14155550100", sms_risk_violations=True,
                    email_alerts=False)
    nid = send(app, user_id=uid, type="RISK_LIMIT_BREACHED", title="Leverage over 10x")
    run_jobs(app)
    [row] = logs(app, notification_id=nid)
    assert (row.status, row.attempts) == ("retrying", 1) and "503" in row.error

    def step():
        with app.app_context():
            sweep()
        run_jobs(app)
        return logs(app, notification_id=nid)[0]

    row = step()  # second failure reaches the threshold (2): the breaker opens
    with app.app_context():
        assert breaker("sms").state()["state"] == "open"
    assert (row.status, row.attempts) == ("retrying", 2)
    row = step()  # still open: no call goes out, no attempt is spent
    assert len(twilio.requests) == 2 and row.attempts == 2 and "circuit open" in row.error
    app.config["DELIVERY_BREAKER_RESET"] = 0.3  # from here, trials come quickly
    row = poll(lambda: (r := step()).status == "sent" and r)
    assert row.attempts == 5 and len(twilio.requests) == 5  # 4 failures, then the success
    with app.app_context():
        assert breaker("sms").state()["state"] == "closed"
        stats = delivery_stats()
    assert stats["sms"]["counts"] == {"sent": 1} and stats["sms"]["success_rate"] == 1.0
    health = app.test_client().get("/api/v1/health").json["deliveries"]
    assert health["sms"]["success_rate"] == 1.0 and health["sms"]["circuit"] == "closed"


@pytest.mark.parametrize("retry_after", ["120", "HTTP-DATE"])
def test_a_429_is_tried_again_when_its_retry_after_says_and_opens_no_breaker(
        make_app, http_recorder, retry_after):
    """Twilio rate-limiting us: sooner would only keep the limit on (15 s had been the wait)."""
    twilio = http_recorder(lambda n: {"code": 20429, "message": "Too Many Requests"},
                           status=429)
    later = datetime.now(UTC) + timedelta(seconds=120)
    twilio.headers = {"Retry-After": "120" if retry_after == "120"
                      else later.strftime("%a, %d %b %Y %H:%M:%S GMT")}
    app = make_app(**providers(twilio=twilio))
    uid = make_user(app, "ida@example.com", phone="+14155550100", sms_order_failures=True,
                    email_alerts=False)
    nid = send(app, user_id=uid, type="BROKER_DISCONNECTED", title="Broker gone")
    run_jobs(app)
    [row] = logs(app, notification_id=nid)
    assert row.status == "retrying" and "429" in row.error
    wait_s = (row.next_attempt_at - clock.utcnow()).total_seconds()
    assert 100 < wait_s <= 121, wait_s
    with app.app_context():
        assert breaker("sms").state()["failures"] == 0  # it answered: up


def test_permanent_rejection_is_not_retried(make_app, http_recorder):
    twilio = http_recorder(lambda n: {"code": 21211, "message": "Invalid 'To' number"},
                           status=400)
    app = make_app(**providers(twilio=twilio))
    uid = make_user(app, "hal@example.com", phone="+14155550100", sms_order_failures=True,
                    email_alerts=False)
    nid = send(app, user_id=uid, type="BROKER_DISCONNECTED", title="Broker gone")
    run_jobs(app)
    [row] = logs(app, notification_id=nid)
    assert row.status == "failed" and "Invalid 'To' number" in row.error
    with app.app_context():
        assert breaker("sms").state()["failures"] == 0


def test_deliveries_page_lists_the_users_rows(app, client, auth):
    uid = auth.create()
    send(app, user_id=uid, title="Shown on the deliveries page")
    run_jobs(app)
    auth.login()
    page = client.get("/deliveries").get_data(as_text=True)
    assert "Shown on the deliveries page" in page and "outbox" in page


def test_the_deliveries_page_pages_back_through_every_row(app, client, auth):
    """It showed the newest 100 and nothing older: a drill's user had more."""
    uid = auth.create()
    with app.app_context():
        db.session.add_all([DeliveryLog(notification_id=f"1-{i}-{uid}", user_id=uid,
                                        channel="email", status="sent")
                            for i in range(230)])
        db.session.commit()
    auth.login()
    seen, url = [], "/deliveries"
    while url:
        page = client.get(url).get_data(as_text=True)
        seen += re.findall(r'<td data-label="Attempts">', page)
        older = re.search(r'href="(/deliveries\?before=\d+)">Older', page)
        url = older and older.group(1)
    assert len(seen) == 230
    assert client.get("/deliveries?before=x").status_code == 200  # the first page
    for before in ("-5", "2147483648", "9" * 30):  # past an id column: a 500 before
        assert client.get(f"/deliveries?before={before}").status_code == 200, before
