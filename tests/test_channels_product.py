"""The channels end to end, as an outside client meets them on `make run`: destinations
pointed at loopback receivers, an alert fired by the loopback feed, TradingView posting to
a hook. Every receiver's count is checked, and every webhook's signature."""

import hashlib
import hmac
import json
import threading
import time
from datetime import timedelta

import pytest
import requests

from devtools.fakefeed import FakeFeed
from tests.hub import HttpRecorder
from tests.product import SYMBOLS, Product, until
from webapp import clock
from webapp.accounts import service as accounts
from webapp.extensions import db
from webapp.models import Escalation, User
from webapp.notify import service_tokens

SECRET = "receiver-knows-this"


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    with FakeFeed() as feed:
        product = Product(tmp_path_factory.mktemp("channels"), feed,
                          env={"DESTINATIONS_ALLOW_PRIVATE": "1"})
        product.start()
        yield product
        assert product.stop() == 0, product.output()


@pytest.fixture(scope="module")
def receivers():
    servers = {name: HttpRecorder(status=200) for name in ("webhook", "json", "ntfy")}
    for server in servers.values():
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield servers
    for server in servers.values():
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def api(product, receivers):
    """An API-key session of the product's user, with three destinations."""
    with product.app.app_context():
        _, key = accounts.create_api_key(db.session.get(User, product.uid), "e2e")
    session = requests.Session()
    session.headers["X-API-Key"] = key
    session.base = product.base + "/api/v1"
    for kind, name, url in (
            ("webhook", "bot", receivers["webhook"].url + "/tickerbell"),
            ("apprise", "json", receivers["json"].url.replace("http://", "json://") + "/in"),
            ("apprise", "phone", receivers["ntfy"].url.replace("http://", "ntfy://") + "/desk")):
        body = {"kind": kind, "name": name, "url": url}
        if kind == "webhook":
            body["secret"] = SECRET
        answer = session.post(session.base + "/destinations", json=body)
        assert answer.status_code == 201, answer.text
    return session


def verify(request):
    """The signature a receiver checks: HMAC-SHA256 of "<timestamp>.<body>", fresh."""
    timestamp = request["headers"]["x-tickerbell-timestamp"]
    expected = "sha256=" + hmac.new(SECRET.encode(), timestamp.encode() + b"." + request["body"],
                                    hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request["headers"]["x-tickerbell-signature"], expected)
    assert abs(time.time() - int(timestamp)) < 300


def settled(receivers, counts, timeout=30):
    """Wait until each receiver has at least its count, then a moment for extras to show."""
    until(lambda: all(len(receivers[n].requests) >= c for n, c in counts.items()), timeout)
    time.sleep(1)  # what should not arrive (a second copy) would come within this
    return {n: len(receivers[n].requests) for n in counts}


def test_an_alert_naming_two_destinations_reaches_each_once_signed(product, api, receivers):
    symbol = next(SYMBOLS)
    before = {n: len(r.requests) for n, r in receivers.items()}
    created = api.post(api.base + "/alerts", json={
        "symbol": symbol, "type": "above", "price": 100, "channels": ["bot", "json"],
        "message": "{{symbol}} hit {{price}} (target {{target}})"})
    assert created.status_code == 201, created.text
    assert product.feed.wait_for_subscription(f"{symbol.lower()}@aggTrade", timeout=15)
    product.feed.trade(symbol, 101)
    got = settled(receivers, {"webhook": before["webhook"] + 1, "json": before["json"] + 1})
    assert got == {"webhook": before["webhook"] + 1, "json": before["json"] + 1}
    assert len(receivers["ntfy"].requests) == before["ntfy"]  # not named by the alert
    hook = receivers["webhook"].requests[-1]
    verify(hook)
    item = json.loads(hook["body"])
    assert item["symbol"] == symbol and item["alert_id"] == created.json()["id"]
    assert item["message"] == f"{symbol} hit 101 (target 100)"
    assert f"{symbol} hit 101" in receivers["json"].requests[-1]["body"].decode()


def test_tradingview_posts_reach_every_destination_once(product, api, receivers):
    made = api.post(api.base + "/hooks", json={"name": "TradingView"})
    assert made.status_code == 201, made.text
    url = made.json()["url"]
    before = {n: len(r.requests) for n, r in receivers.items()}
    text = requests.post(url, data="BTCUSDT crossing 65000", timeout=3,
                         headers={"Content-Type": "text/plain; charset=utf-8"})
    body = {"title": "ETH breakout", "message": "ETHUSDT above 4000", "symbol": "ETHUSDT",
            "price": "4001.5", "strategy": "trend"}
    posted = requests.post(url, json=body, timeout=3)
    again = requests.post(url, json=body, timeout=3)  # TradingView retried: the same body
    assert (text.status_code, posted.status_code, again.status_code) == (202, 202, 202)
    want = {n: before[n] + 2 for n in receivers}
    assert settled(receivers, want) == want
    hooks = [json.loads(r["body"]) for r in receivers["webhook"].requests[-2:]]
    for request in receivers["webhook"].requests[-2:]:
        verify(request)
    assert sorted(h["type"] for h in hooks) == ["WEBHOOK_ALERT", "WEBHOOK_ALERT"]
    assert {h["message"] for h in hooks} == {"BTCUSDT crossing 65000", "ETHUSDT above 4000"}
    unknown = requests.post(url[:-4] + "xxxx", data="x", timeout=3)
    assert unknown.status_code == 404


def test_a_breach_repeats_until_acknowledged_then_stops(product, api, receivers):
    """Risk-limit breaches insist by default: with a repeat every minute, the scheduler's
    next run sends a reminder to every destination; an acknowledgement stops the rest."""
    changed = api.patch(api.base + "/preferences", json={"insist_every_min": 1})
    assert changed.status_code == 200 and "RISK_LIMIT_BREACHED" in changed.json()["insist_types"]
    with product.app.app_context():
        _, token = service_tokens.create(f"risk-{time.monotonic_ns()}")
    before = {n: len(r.requests) for n, r in receivers.items()}
    posted = requests.post(product.base + "/api/v1/events", timeout=5, json={
        "type": "RISK_LIMIT_BREACHED", "user_id": product.uid, "title": "Desk over its limit",
        "message": "Exposure 1.2M, limit 1M"}, headers={"Authorization": f"Bearer {token}"})
    assert posted.status_code == 202, posted.text
    [nid] = posted.json()["ids"]
    first = {n: before[n] + 1 for n in receivers}
    assert settled(receivers, first) == first
    assert json.loads(receivers["webhook"].requests[-1]["body"])["ack_url"]

    again = {n: before[n] + 2 for n in receivers}  # the scheduler runs the job every 30 s
    assert settled(receivers, again, timeout=120) == again
    reminder = json.loads(receivers["webhook"].requests[-1]["body"])
    verify(receivers["webhook"].requests[-1])
    assert reminder["id"] == nid and reminder["title"].startswith("Reminder 1 of 5")

    with product.app.app_context():
        due = db.session.get(Escalation, nid).next_at  # when the 2nd reminder would go
    acked = api.post(f"{api.base}/notifications/{nid}/ack")
    assert acked.status_code == 200 and acked.json()["acknowledged_by"] == "API key 'e2e'"
    # wait past the moment the next reminder was due, plus a run of the job: none comes
    until(lambda: clock.utcnow() > due + timedelta(seconds=40), 120, every=1)
    assert {n: len(r.requests) for n, r in receivers.items()} == again
