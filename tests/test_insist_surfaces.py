"""Where an insisting alert meets its user: the acknowledge button on the live item and toast,
the email's link and the page it opens, the deliveries page's reminders, a tapped push."""

import email
import email.policy
import json
import os
import re

import http_ece
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import AuthActions, csrf_token
from tests.hub import make_user, run_jobs
from tests.test_insist import b64, breach, escalation, make_world, run_at
from webapp import keys
from webapp.delivery.channels import push
from webapp.inbox import service as inbox
from webapp.insist import service
from webapp.live import views as stream_views
from webapp.live.sse import Renderer, SseState
from webapp.notify import router
from webapp.preferences import service as preferences

pytestmark = pytest.mark.both_databases


@pytest.fixture
def world(make_app, http_recorder):
    return make_world(make_app, http_recorder)

def test_the_live_item_and_toast_of_a_type_that_insists_have_an_acknowledge_button(world):
    app, uid, _ = world
    nid = breach(app, uid)
    with app.app_context():
        price = router.route({"user_id": uid, "type": "PRICE_ALERT", "title": "BTC 70k"})[0]
        replay, unread = inbox.snapshot(uid, "0")
        render = Renderer(app, "/notifications/")
        frames = SseState(render, unread, service.user_types(uid)).opening(replay).decode()
    toasts = [f for f in frames.split("\n\n") if f.startswith("event: toast")]
    assert len(toasts) == 2
    [insisting] = [t for t in toasts if nid in t]
    [plain] = [t for t in toasts if price in t]
    assert f'hx-post="/notifications/{nid}/ack"' in insisting and "Acknowledge" in insisting
    assert "Acknowledge" not in plain
    items = [f for f in frames.split("\n\n") if f.startswith("id: ")]
    assert [f'hx-post="/notifications/{nid}/ack"' in f for f in items] == [True, False]


def test_the_email_carries_the_link_and_the_link_names_the_email(world, tmp_path):
    app, uid, _ = world
    nid = breach(app, uid, type="SYSTEM_MAINTENANCE", title="Exchange maintenance at 02:00")
    run_jobs(app)  # no SMTP server configured: the email lands in the outbox
    [eml] = (tmp_path / "instance" / "outbox").glob("*-email.eml")
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    text = msg.get_body(("plain",)).get_content()
    link = re.search(r"Acknowledge \(stops the reminders\): (http://bell\.test/ack/\S+)", text)
    assert link and f'href="{link.group(1)}"' in msg.get_body(("html",)).get_content()
    client = app.test_client()
    path = link.group(1).removeprefix("http://bell.test")
    page = client.get(path).get_data(as_text=True)
    assert "Exchange maintenance at 02:00" in page and "This link came in the email." in page
    client.post(path, data={"csrf_token": csrf_token(client, path)})
    assert escalation(app, nid).acked_by == "link in the email"


def test_the_deliveries_page_tells_a_reminder_from_the_first_delivery(world):
    app, uid, receivers = world
    client = app.test_client()
    nid = breach(app, uid)
    run_jobs(app)
    AuthActions(client, app).login("ann@example.com")
    assert "reminder 1" not in client.get("/deliveries").get_data(as_text=True)
    assert run_at(app, nid, 5) == 1
    page = client.get("/deliveries").get_data(as_text=True)
    assert page.count("Leverage 12x") == 2 and page.count("reminder 1") == 1


def test_a_push_reminder_opens_the_acknowledgement_page_when_tapped(make_app, http_recorder):
    device = http_recorder()
    private, public = push.generate_vapid_keys()
    app = make_app(PUSH_ALLOW_INSECURE_ENDPOINTS=True, VAPID_PRIVATE_KEY=private,
                   VAPID_PUBLIC_KEY=public, PUBLIC_URL="http://bell.test")
    uid = make_user(app, "bo@example.com", email_alerts=False)
    key = ec.generate_private_key(ec.SECP256R1())
    auth = os.urandom(16)
    with app.app_context():
        preferences.save_push_subscription(uid, {"endpoint": device.url + "/p", "keys": {
            "p256dh": b64(key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)),
            "auth": b64(auth)}}, "Firefox")
    breach(app, uid)  # RISK_LIMIT_BREACHED insists by default
    run_jobs(app)
    [request] = device.wait_for(1)
    payload = json.loads(http_ece.decrypt(request["body"], private_key=key, auth_secret=auth,
                                          version="aes128gcm"))
    assert payload["url"].startswith("http://bell.test/ack/")


def test_an_acknowledgement_from_anywhere_reaches_the_user_s_open_pages_once(world):
    """The email's link (or the API, another tab) acknowledges: the pages hear `changed`."""
    app, uid, _ = world
    nid = breach(app, uid)
    with redis.Redis.from_url(app.config["REDIS_URL"]) as r, r.pubsub(
            ignore_subscribe_messages=True) as listening:
        listening.subscribe(keys.user_channel(uid))
        listening.get_message(timeout=1)
        with app.app_context():
            service.ack(uid, nid, "link in the email")
            service.ack(uid, nid, "someone later")  # the first stands: no news
        got = json.loads(listening.get_message(timeout=2)["data"])
        assert listening.get_message(timeout=0.1) is None
    acked = got["data"]["acked"]
    assert got["event"] == "changed" and acked["id"] == nid and acked["by"] == "link in the email"
    assert acked["at"] == service.iso(escalation(app, nid).acked_at)


def test_a_replayed_notification_acknowledged_meanwhile_says_so_with_no_button(world):
    """A browser back after a gap replays what it missed as it stands: one acknowledged in the
    meantime has no Acknowledge button, on its item or its toast."""
    app, uid, _ = world
    acked, pending = breach(app, uid), breach(app, uid, title="Leverage 13x")
    with app.app_context():
        service.ack(uid, acked, "link in the email")
        replay, unread = inbox.snapshot(uid, "0")
        insisting = service.user_types(uid)
        render = Renderer(app, "/notifications/")  # as /stream opens it
        frames = SseState(render, unread, insisting, stream_views._ended(
            uid, replay, insisting)).opening(replay).decode().split("\n\n")
    item = next(f for f in frames if f.startswith(f"id: {acked.rsplit('-', 1)[0]}"))
    toast = next(f for f in frames if f.startswith("event: toast") and acked in f)
    assert "Acknowledged by link in the email at" in item and "/ack" not in item
    assert "Acknowledged by link in the email" in toast and "/ack" not in toast
    still = next(f for f in frames if f.startswith(f"id: {pending.rsplit('-', 1)[0]}"))
    assert f'hx-post="/notifications/{pending}/ack"' in still
