"""Destinations as delivery channels, through the real router, plan and dispatch jobs, to
loopback receivers: signed webhooks, Apprise's json:// and ntfy://, refusal, the breaker."""

import hashlib
import hmac
import json
import socket
import threading
import time
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import AuthActions
from tests.hub import make_user, poll, run_jobs
from tests.test_idempotency import needs_postgres, table_lock
from webapp import clock
from webapp.core import secretbox
from webapp.delivery.dispatch import breaker
from webapp.delivery.sweep import sweep
from webapp.destinations import service as destinations
from webapp.extensions import db
from webapp.inbox import service as inbox
from webapp.models import DeliveryLog, Destination, User
from webapp.notify import router

pytestmark = pytest.mark.both_databases
LOOPBACK = {"DESTINATIONS_ALLOW_PRIVATE": True, "DELIVERY_BACKOFF": 0}


def add(app, uid, **data):
    """Add a destination as the API does; returns (id, generated secret)."""
    with app.app_context():
        dest, secret = destinations.create(uid, {"name": f"d{time.monotonic_ns()}", **data})
        return dest.id, secret


def send(app, uid, now_ms=None, **notification):
    with app.app_context():
        return router.route({"user_id": uid, "type": "PRICE_ALERT", "title": "BTC up",
                             "message": "65010.5", **notification}, now_ms=now_ms)[0]


def rows(app, **where):
    with app.app_context():
        found = db.session.scalars(db.select(DeliveryLog).filter_by(**where)
                                   .order_by(DeliveryLog.id)).all()
        db.session.expunge_all()
        return found


def destination(app, dest_id):
    with app.app_context():
        dest = db.session.get(Destination, dest_id)
        db.session.expunge(dest)
        return dest


def verified(request, secret):
    """The body, if its signature and timestamp are what a receiver should accept."""
    timestamp = request["headers"]["x-tickerbell-timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + request["body"],
                        hashlib.sha256).hexdigest()
    signature = request["headers"]["x-tickerbell-signature"]
    assert hmac.compare_digest(signature, f"sha256={expected}"), "bad signature"
    assert abs(int(timestamp) - time.time()) < 300, "stale timestamp"
    return json.loads(request["body"])


def test_a_routed_notification_reaches_the_webhook_signed(make_app, http_recorder):
    receiver = http_recorder(status=200)
    app = make_app(**LOOPBACK)
    uid = make_user(app, "wh@example.com", email_alerts=False)
    dest_id, secret = add(app, uid, kind="webhook", url=f"{receiver.url}/hook?k=1")
    nid = send(app, uid, data={"symbol": "BTCUSDT", "price": 65010.5})
    run_jobs(app)
    [request] = receiver.wait_for(1)
    assert request["path"] == "/hook?k=1"
    assert request["headers"]["content-type"] == "application/json"
    item = verified(request, secret)
    assert item["id"] == nid and item["type"] == "PRICE_ALERT" and item["title"] == "BTC up"
    assert item["symbol"] == "BTCUSDT" and item["current_price"] == 65010.5
    [row] = rows(app, notification_id=nid)
    assert (row.channel, row.status, row.attempts) == (f"dest:{dest_id}", "sent", 1)
    assert destination(app, dest_id).last_sent_at is not None


def test_a_tampered_body_fails_the_receivers_check(make_app, http_recorder):
    receiver = http_recorder(status=200)
    app = make_app(**LOOPBACK)
    uid = make_user(app, "tamper@example.com", email_alerts=False)
    _, secret = add(app, uid, kind="webhook", url=f"{receiver.url}/hook")
    send(app, uid)
    run_jobs(app)
    [request] = receiver.wait_for(1)
    with pytest.raises(AssertionError, match="bad signature"):
        verified({**request, "body": request["body"].replace(b"BTC up", b"BTC down")}, secret)
    with pytest.raises(AssertionError, match="bad signature"):
        verified(request, "not-the-secret-at-all")


@pytest.mark.parametrize(("scheme", "path"), [("json", "/apprise/in"), ("ntfy", "/alerts")])
def test_apprise_urls_reach_a_loopback_receiver(make_app, http_recorder, scheme, path):
    receiver = http_recorder(status=200)
    app = make_app(**LOOPBACK)
    uid = make_user(app, f"{scheme}@example.com", email_alerts=False)
    port = receiver.server_address[1]
    dest_id, secret = add(app, uid, kind="apprise", url=f"{scheme}://127.0.0.1:{port}{path}")
    assert secret is None
    nid = send(app, uid, title="ETH below 3000", message="Traded at 2999.5")
    run_jobs(app)
    [request] = receiver.wait_for(1)
    text = request["body"].decode()
    assert "ETH below 3000" in text and "Traded at 2999.5" in text
    [row] = rows(app, notification_id=nid)
    assert (row.channel, row.status) == (f"dest:{dest_id}", "sent")


def test_urls_and_secrets_are_not_plain_text_in_the_database(make_app, http_recorder):
    receiver = http_recorder(status=200)
    app = make_app(**LOOPBACK)
    uid = make_user(app, "raw@example.com", email_alerts=False)
    port = receiver.server_address[1]
    hook, secret = add(app, uid, kind="webhook", url=f"{receiver.url}/in/tok3n-in-path")
    ntfy, _ = add(app, uid, kind="apprise", url=f"ntfy://us3r:pa55word@127.0.0.1:{port}/t0pic")
    with app.app_context():
        raw = db.session.execute(db.text(
            "select url_encrypted, secret_encrypted, url_masked from destinations")).all()
    text = " ".join(str(value) for row in raw for value in row)
    for plain in ("tok3n-in-path", secret, "pa55word", f"127.0.0.1:{port}/in"):
        assert plain not in text
    send(app, uid)
    run_jobs(app)
    assert len(receiver.wait_for(2)) == 2  # and yet both still deliver


def test_a_private_address_is_refused_at_send_after_the_setting_changes(make_app, http_recorder):
    receiver = http_recorder(status=200)
    app = make_app(**LOOPBACK)
    uid = make_user(app, "rebind@example.com", email_alerts=False)
    hook, _ = add(app, uid, kind="webhook", url=f"{receiver.url}/hook")
    port = receiver.server_address[1]
    json_dest, _ = add(app, uid, kind="apprise", url=f"json://127.0.0.1:{port}/x")
    app.config["DESTINATIONS_ALLOW_PRIVATE"] = False  # as if the name now resolved inside
    nid = send(app, uid)
    run_jobs(app)
    by_channel = {r.channel: r for r in rows(app, notification_id=nid)}
    for dest_id in (hook, json_dest):
        row = by_channel[f"dest:{dest_id}"]
        assert row.status == "failed" and "private or loopback" in row.error, row.error
    assert receiver.requests == []


def test_a_name_that_answers_otherwise_when_apprise_looks_it_up_is_not_reached(
        make_app, http_recorder, monkeypatch):
    """DNS rebinding: the name resolves to a public address for our check, then to a loopback
    one for Apprise's own lookup a moment later. The resolver stands for a DNS server."""
    receiver = http_recorder(status=200)
    port = receiver.server_address[1]
    real, asked = socket.getaddrinfo, []

    def rebinding(host, *args, **kwargs):
        if host != "rebind.example":
            return real(host, *args, **kwargs)
        asked.append(host)
        address = "93.184.215.14" if len(asked) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    app = make_app(DELIVERY_MAX_ATTEMPTS=1)
    uid = make_user(app, "rebound@example.com", email_alerts=False)
    with app.app_context():  # saved as a public name: the check at save time is not the point
        dest = Destination(user_id=uid, name="rebinding", kind="apprise",
                           url_encrypted=secretbox.encrypt(f"json://rebind.example:{port}/x"),
                           url_masked="json://rebind.example/...")
        db.session.add(dest)
        db.session.commit()
        dest_id = dest.id
    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    nid = send(app, uid)
    run_jobs(app)
    [row] = rows(app, notification_id=nid, channel=f"dest:{dest_id}")
    assert row.status == "failed" and "private or loopback" in row.error, row.error
    assert len(asked) >= 2 and receiver.requests == []
    assert socket.getaddrinfo("localhost", 80)  # the guard holds only while Apprise sends


def test_a_host_apprise_makes_of_another_part_of_the_url_is_guarded_too(make_app):
    """zulip:// names no {host}: Apprise makes https://<organisation>.<hostname> of its parts.
    Saved as any Apprise URL, its send must reach no private address either."""
    app = make_app(DELIVERY_MAX_ATTEMPTS=1)
    uid = make_user(app, "zulip@example.com", email_alerts=False)
    dest_id, _ = add(app, uid, kind="apprise",
                     url="zulip://bot@127.0.0.1/abcdefghijklmnopqrstuvwxyz012345")
    nid = send(app, uid)
    run_jobs(app)
    [row] = rows(app, notification_id=nid, channel=f"dest:{dest_id}")
    assert row.status == "failed" and "private or loopback" in row.error, row.error


def test_a_receiver_answering_429_is_tried_again_when_its_retry_after_says(
        make_app, http_recorder):
    receiver = http_recorder(status=429)
    receiver.headers = {"Retry-After": "90"}
    app = make_app(**LOOPBACK)
    uid = make_user(app, "busy@example.com", email_alerts=False)
    hook, _ = add(app, uid, kind="webhook", url=f"{receiver.url}/hook")
    nid = send(app, uid)
    run_jobs(app)
    [row] = rows(app, notification_id=nid, channel=f"dest:{hook}")
    assert row.status == "retrying" and "429" in row.error
    assert 80 < (row.next_attempt_at - clock.utcnow()).total_seconds() <= 91
    assert destination(app, hook).failures == 0  # it answered: not a failure to switch off


def test_a_failing_receiver_is_retried_with_backoff(make_app, http_recorder):
    receiver = http_recorder(status=500)
    app = make_app(**{**LOOPBACK, "DELIVERY_BACKOFF": 30})
    uid = make_user(app, "slow@example.com", email_alerts=False)
    add(app, uid, kind="webhook", url=f"{receiver.url}/hook")
    nid = send(app, uid)
    run_jobs(app)
    [row] = rows(app, notification_id=nid)
    assert (row.status, row.attempts) == ("retrying", 1) and "500" in row.error
    assert row.next_attempt_at - row.updated_at >= timedelta(seconds=29)
    with app.app_context():
        assert sweep() == 0  # not due yet: the sweep leaves it


def test_twenty_failures_in_a_row_open_the_breaker_then_switch_it_off(make_app, http_recorder):
    receiver = http_recorder(status=500)
    app = make_app(**LOOPBACK, DELIVERY_BREAKER_THRESHOLD=3, DELIVERY_BREAKER_RESET=2.0)
    uid = make_user(app, "fail@example.com", email_alerts=False)
    dest_id, _ = add(app, uid, kind="webhook", url=f"{receiver.url}/hook")
    nids = [send(app, uid, title=f"n{i}") for i in range(4)]  # 4 x 5 attempts = 20 failures
    run_jobs(app)
    assert len(receiver.requests) == 3  # the third failure opened the breaker ...
    errors = [r.error for r in rows(app, channel=f"dest:{dest_id}")]
    assert sum("circuit open" in e for e in errors) == 1  # ... so the fourth waited, unsent
    with app.app_context():
        assert breaker(f"dest:{dest_id}").state()["state"] == "open"
    app.config["DELIVERY_BREAKER_RESET"] = 0.2  # from here, each step waits out a short one

    def step():
        with app.app_context():
            poll(lambda: breaker(f"dest:{dest_id}").allow())
            sweep()
        run_jobs(app)
        return not destination(app, dest_id).enabled

    assert any(step() for _ in range(60))
    dest = destination(app, dest_id)
    assert dest.failures == 20 and "500" in dest.disabled_reason and len(receiver.requests) == 20
    assert {(r.status, r.attempts) for r in rows(app, channel=f"dest:{dest_id}")} == \
        {("failed", 5)}
    with app.app_context():
        items, _ = inbox.list_page(uid)
    [notice] = [n for n in items if n["type"] == "ACCOUNT_SECURITY"]
    assert dest.name in notice["title"] and "switched off" in notice["title"]
    later = send(app, uid, title="after")  # a switched-off destination is planned no more
    run_jobs(app)
    assert rows(app, notification_id=later) == [] and len(receiver.requests) == 20
    assert not set(nids) & {n["id"] for n in items if n["type"] == "ACCOUNT_SECURITY"}


def test_switching_on_again_resets_the_count_and_delivers(make_app, http_recorder):
    receiver = http_recorder(status=200)
    app = make_app(**LOOPBACK, DESTINATION_MAX_FAILURES=1)
    uid = make_user(app, "again@example.com", email_alerts=False)
    dest_id, _ = add(app, uid, kind="webhook", url=f"{receiver.url}/hook")
    receiver.failures = 1
    with app.app_context():
        user = db.session.get(User, uid)
        assert destinations.send_test(user, dest_id)[0] is False
        assert destinations.send_test(user, dest_id) == (
            False, "the destination is switched off: 1 attempts in a row failed; "
                   "the last: ConnectionError: the receiver answered 503")
        destinations.switch_on(uid, dest_id)
        ok, detail = destinations.send_test(user, dest_id)
    assert (ok, detail) == (True, "HTTP 200")
    assert json.loads(receiver.wait_for(2)[1]["body"])["type"] == "TEST"
    assert destination(app, dest_id).failures == 0


def test_types_choose_what_a_destination_receives(make_app, http_recorder):
    receiver = http_recorder(status=200)
    app = make_app(**LOOPBACK)
    uid = make_user(app, "types@example.com", email_alerts=False, rt_price_alerts=False)
    orders, _ = add(app, uid, kind="webhook", url=f"{receiver.url}/orders",
                    types=["ORDER_EXECUTED", "PRICE_ALERT"])
    default, _ = add(app, uid, kind="webhook", url=f"{receiver.url}/default")
    send(app, uid, type="PRICE_ALERT")  # toggled off, but named by the first destination
    send(app, uid, type="ORDER_EXECUTED")
    send(app, uid, type="STRATEGY_STATUS")  # named by neither: only the default gets it
    run_jobs(app)
    got = receiver.wait_for(4)
    by_path = sorted((r["path"], json.loads(r["body"])["type"]) for r in got)
    assert by_path == [("/default", "ORDER_EXECUTED"), ("/default", "STRATEGY_STATUS"),
                       ("/orders", "ORDER_EXECUTED"), ("/orders", "PRICE_ALERT")]


def test_quiet_hours_hold_a_destination_until_they_end(make_app, http_recorder):
    receiver = http_recorder(status=200)
    app = make_app(**LOOPBACK)
    uid = make_user(app, "quiet@example.com", email_alerts=False, quiet_start="22:00",
                    quiet_end="07:00")
    dest_id, _ = add(app, uid, kind="webhook", url=f"{receiver.url}/hook")
    night = datetime(2030, 1, 15, 23, 30)
    nid = send(app, uid, now_ms=clock.to_ms(night))
    run_jobs(app)
    [row] = rows(app, notification_id=nid)
    assert (row.channel, row.status) == (f"dest:{dest_id}", "held") and receiver.requests == []
    with app.app_context():
        assert sweep(now=datetime(2030, 1, 16, 7, 0)) == 1
    run_jobs(app)
    assert len(receiver.wait_for(1)) == 1 and rows(app, notification_id=nid)[0].status == "sent"


def test_the_per_minute_limit_sends_the_rest_to_the_digest(make_app, http_recorder):
    receiver = http_recorder(status=200)
    app = make_app(**LOOPBACK)
    uid = make_user(app, "limit@example.com", email_alerts=False, max_per_minute=2)
    dest_id, _ = add(app, uid, kind="webhook", url=f"{receiver.url}/hook")
    nids = [send(app, uid, title=f"n{i}") for i in range(3)]
    run_jobs(app)
    statuses = [rows(app, notification_id=nid)[0].status for nid in nids]
    assert statuses == ["sent", "sent", "digest"] and len(receiver.wait_for(2)) == 2


def test_the_deliveries_page_names_destinations_and_health_sums_them(make_app, http_recorder):
    receiver = http_recorder(status=200)
    app = make_app(**LOOPBACK)
    client = app.test_client()
    auth = AuthActions(client, app)
    uid = auth.create()
    with app.app_context():
        dest, _ = destinations.create(uid, {"kind": "webhook", "name": "Desk <b>bot</b>",
                                            "url": f"{receiver.url}/hook"})
        channel = dest.channel
    gone, _ = add(app, uid, kind="webhook", url=f"{receiver.url}/gone")
    send(app, uid)
    run_jobs(app)
    receiver.wait_for(2)
    with app.app_context():
        destinations.delete(uid, gone)
    auth.login()
    page = client.get("/deliveries").get_data(as_text=True)
    assert page.count("Desk &lt;b&gt;bot&lt;/b&gt;") == 2  # its stats and its row
    assert "a deleted destination" in page and channel not in page and "<b>bot" not in page
    assert "provider answering" in page
    with app.app_context():  # switched off: never retried, whatever its breaker says
        row = db.session.get(Destination, dest.id)
        row.enabled, row.disabled_reason = False, "20 attempts in a row failed; the last: 410"
        db.session.commit()
    page = client.get("/deliveries").get_data(as_text=True)
    stat = page.split("<b>Desk &lt;b&gt;bot&lt;/b&gt;</b>", 1)[1].split("</small>", 1)[0]
    assert "switched off (20 attempts in a row failed; the last: 410)" in stat
    assert "provider answering" not in stat
    health = client.get("/api/v1/health").get_json()["deliveries"]
    assert health["destinations"]["counts"] == {"sent": 2}
    assert not [name for name in health if name.startswith("dest:")]


class Redirecting(BaseHTTPRequestHandler):
    """Answers every POST with a 307 to `self.server.target` (where a host could send us)."""

    def do_POST(self):  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(307)
        self.send_header("Location", self.server.target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("kind, scheme", [("apprise", "json"), ("webhook", "http")])
def test_a_redirect_is_never_followed(make_app, http_recorder, kind, scheme):
    inside = http_recorder(status=200)  # stands for a private address behind a public one
    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    server.target = inside.url + "/metadata"
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        app = make_app(**LOOPBACK, DELIVERY_MAX_ATTEMPTS=1)
        uid = make_user(app, f"{kind}@example.com", email_alerts=False)
        add(app, uid, kind=kind, url=f"{scheme}://127.0.0.1:{server.server_address[1]}/in")
        nid = send(app, uid)
        run_jobs(app)
        [row] = rows(app, notification_id=nid)
        assert row.status == "failed" and inside.requests == []
    finally:
        server.shutdown()
        server.server_close()


def test_a_webhook_sent_while_destinations_are_locked_is_recorded_sent_once(
        make_app, db_backend, http_recorder):
    """The destination's count is written as it sends; under a lock that write failed, the
    delivery was left `sending` and the sweep sent the webhook again."""
    needs_postgres(db_backend)
    hook = http_recorder()
    app = make_app(PG_LOCK_TIMEOUT_MS=200, **LOOPBACK)
    uid = make_user(app, "locked-dest@example.com")
    add(app, uid, kind="webhook", url=hook.url + "/in")
    with table_lock("destinations", "SHARE"):
        nid = send(app, uid)
        run_jobs(app)
        assert hook.wait_for(1)
    [row] = rows(app, notification_id=nid, channel=f"dest:{row_dest(app, uid)}")
    assert (row.status, row.attempts) == ("sent", 1)
    with app.app_context():
        sweep(now=clock.utcnow() + timedelta(hours=1))
    run_jobs(app)
    assert len(hook.requests) == 1


def row_dest(app, uid):
    with app.app_context():
        return db.session.scalar(db.select(Destination.id).where(Destination.user_id == uid))
