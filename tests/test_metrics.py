"""GET /metrics: who may scrape it, and each number moving by exactly what happened.

Every value is read back through a real Prometheus text parser. In this process the default
registry is shared by every test, so each test compares a scrape before and after its action.
"""

import json
import operator
import re
import threading
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.hub import make_user, poll, run_jobs, twilio_answer
from tests.sse_helpers import EventReader
from tests.test_deliveries import providers
from tests.test_listener_e2e import Tap
from webapp import clock, keys
from webapp.accounts import security_events
from webapp.alerts import service as alerts
from webapp.core import metrics
from webapp.core.breaker import Breaker
from webapp.core.queues import enqueue
from webapp.delivery import dispatch
from webapp.extensions import db, get_redis
from webapp.hooks import service as hooks
from webapp.inbox import service as inbox
from webapp.models import CriticalNotification, DeliveryLog, DeliveryStatus
from webapp.notify import router, service_tokens
from worker.listener.connection import Listener
from worker.listener.pacing import Backoff
from worker.matcher import Matcher

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
TOKEN = "scrape-token-0123456789"


def parse(text):
    """{(sample name, frozenset of labels): value} of an exposition, through the parser."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(client, **headers):
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.status_code
    return parse(response.get_data(as_text=True))


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


class Delta:
    """The change of named samples between a scrape taken now and `after()`."""

    def __init__(self, client):
        self.client, self.before = client, scrape(client)

    def after(self):
        self.now = scrape(self.client)
        return self

    def __call__(self, name, **labels):
        return value(self.now, name, **labels) - value(self.before, name, **labels)


@pytest.fixture
def app(make_app):
    app = make_app(METRICS_TOKEN=TOKEN, STREAM_KEEPALIVE_S=0.2)
    yield app
    hub = app.extensions.get("fanout")
    if hub is not None:
        hub.stop()


# -- access ----------------------------------------------------------------------------
@pytest.mark.parametrize(("remote", "headers", "status"), [
    ("127.0.0.1", {}, 200),
    ("::1", {}, 200),
    ("::ffff:127.0.0.1", {}, 200),  # IPv4 loopback on a dual-stack socket
    ("::ffff:10.1.2.3", {}, 404),
    ("10.1.2.3", {}, 404),
    ("10.1.2.3", {"X-Forwarded-For": "127.0.0.1"}, 404),  # never trusted to grant
    ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}, 404),  # came through a proxy
    ("127.0.0.1", {"X-Real-IP": "203.0.113.9"}, 404),
    ("10.1.2.3", {"Authorization": f"Bearer {TOKEN}"}, 200),
    ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9", "Authorization": f"Bearer {TOKEN}"}, 200),
    ("10.1.2.3", {"Authorization": f"Bearer {TOKEN}x"}, 404),
    ("10.1.2.3", {"Authorization": f"Basic {TOKEN}"}, 404),
    ("10.1.2.3", {"Authorization": "Bearer "}, 404),
])
def test_only_loopback_or_the_token_may_scrape(app, remote, headers, status):
    response = app.test_client().get("/metrics", headers=headers,
                                     environ_base={"REMOTE_ADDR": remote})
    assert response.status_code == status
    if status == 200:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        assert parse(response.get_data(as_text=True))


def test_without_a_token_configured_no_bearer_opens_it(make_app):
    client = make_app(METRICS_TOKEN="").test_client()
    for presented in ("Bearer ", "Bearer None", "Bearer false"):
        response = client.get("/metrics", headers={"Authorization": presented},
                              environ_base={"REMOTE_ADDR": "10.1.2.3"})
        assert response.status_code == 404


def test_needs_no_login_and_no_csrf(app):
    client = app.test_client()  # no session, no CSRF token
    assert client.get("/metrics").status_code == 200
    assert client.post("/metrics").status_code == 405


# -- values read from Redis at scrape time ---------------------------------------------
def test_queue_depths_and_failed_jobs_are_read_from_rq(app, client):
    with app.app_context():
        enqueue(operator.truediv, 1, 0, queue="low")
        enqueue(operator.truediv, 1, 0, queue="low")
    samples = scrape(client)
    assert value(samples, "tickerbell_queue_depth", queue="low") == 2
    assert value(samples, "tickerbell_queue_failed_jobs", queue="low") == 0
    run_jobs(app)  # both fail: ZeroDivisionError
    samples = scrape(client)
    assert value(samples, "tickerbell_queue_depth", queue="low") == 0
    assert value(samples, "tickerbell_queue_failed_jobs", queue="low") == 2
    assert value(samples, "tickerbell_redis_up") == 1


def test_batches_waiting_for_their_slow_steps_are_counted_until_drained(app, client):
    uid = make_user(app, "waiting@example.com")
    with app.app_context():
        _, token = service_tokens.create("waiting")
    for title in ("one", "two"):
        assert client.post("/api/v1/events", headers={"Authorization": f"Bearer {token}"},
                           json={"type": "ORDER_EXECUTED", "user_id": uid,
                                 "title": title}).status_code == 202
    samples = scrape(client)
    assert value(samples, "tickerbell_slow_steps_waiting", queue="default") == 2
    assert value(samples, "tickerbell_slow_steps_waiting", queue="high") == 0
    assert value(samples, "tickerbell_slow_steps_parked") == 0
    run_jobs(app)
    assert value(scrape(client), "tickerbell_slow_steps_waiting", queue="default") == 0


def test_breakers_and_listener_status_are_read_from_redis(app, client):
    with app.app_context():
        email = Breaker("delivery-email", threshold=1)
        email.failure("smtp refused")
        r = get_redis()
        r.hset(keys.listener_status(0), mapping={
            "state": "connected", "heartbeat": int(time.time() * 1000), "connections": 3})
    samples = scrape(client)
    assert value(samples, "tickerbell_breaker_state", breaker="delivery-email") == 2
    assert value(samples, "tickerbell_breaker_state", breaker="binance") == 0
    assert value(samples, "tickerbell_listener_connections", shard="0") == 3
    assert value(samples, "tickerbell_listener_up", shard="0") == 1
    with app.app_context():
        r.hset(keys.listener_status(0), "heartbeat", 1)  # long silent: a dead listener
    samples = scrape(client)
    assert value(samples, "tickerbell_listener_up", shard="0") == 0
    assert value(samples, "tickerbell_listener_connections", shard="0") == 0
    with app.app_context():  # listeners split two ways, announced: this process unset
        r.set(keys.LISTENER_SHARDS, 2)
    assert ("tickerbell_listener_up", frozenset({("shard", "1")})) in scrape(client)  # exported


def test_a_scrape_answers_while_redis_is_down(make_app, refused_port):
    client = make_app(REDIS_URL=f"redis://127.0.0.1:{refused_port}/0").test_client()
    samples = scrape(client)
    assert value(samples, "tickerbell_redis_up") == 0
    assert not any(name == "tickerbell_queue_depth" for name, _ in samples)


# -- values the processes count --------------------------------------------------------
@pytest.fixture
def listen(app, feed):
    running = []

    def start():
        tap = Tap(Matcher(app.extensions["redis"]))
        listener = Listener(app.extensions["redis"], tap, feed.url, poll_s=0.02,
                            heartbeat_s=0.05, recv_timeout_s=0.02, backoff=Backoff(0.01, 0.1))
        thread = threading.Thread(target=listener.run, daemon=True)
        thread.start()
        running.append((listener, thread))
        return tap

    yield start
    for listener, thread in running:
        listener.stop.set()
        thread.join(5)


def test_a_tick_through_the_listener_counts_its_group_and_what_it_fired(app, client, feed,
                                                                        listen):
    uid = make_user(app, "ticks@example.com")
    with app.app_context():
        for _ in range(3):
            alerts.create_alert(uid, {"symbol": "METRICUSDT", "type": "above", "price": 100})
    group = metrics.symbol_group("METRICUSDT")
    tap = listen()
    assert feed.wait_for_subscription("metricusdt@aggTrade")
    delta = Delta(client)
    feed.trade("METRICUSDT", 101)
    assert tap.wait_ticks(1)
    # the listener's thread pushes its tick counts within FLUSH_S, busy or idle
    assert poll(lambda: delta.after()("tickerbell_matcher_call_seconds_count"))
    assert delta("tickerbell_ticks_received_total", group=group) == 1
    assert delta("tickerbell_ticks_matched_total", group=group) == 1
    assert delta("tickerbell_alerts_fired_total", type="PRICE_ALERT") == 3
    assert delta("tickerbell_notifications_total", type="PRICE_ALERT",
                 source="alert") == 3
    assert delta("tickerbell_matcher_call_seconds_count") == 1
    took = delta("tickerbell_matcher_call_seconds_sum")
    assert took > 0
    for bound in (*metrics.CALL_BUCKETS, float("inf")):  # cumulative: in every bucket from its own
        le = "+Inf" if bound == float("inf") else str(bound)
        assert delta("tickerbell_matcher_call_seconds_bucket", le=le) == (took <= bound), le
    with app.app_context():
        assert len(inbox.list_page(uid, limit=10)[0]) == 3  # what the counters say happened


def test_volume_ticks_fire_volume_alerts(app, client, feed, listen):
    uid = make_user(app, "volume@example.com")
    with app.app_context():
        alerts.create_alert(uid, {"symbol": "METRICUSDT", "type": "volume_above", "price": 10})
    tap = listen()
    assert feed.wait_for_subscription("metricusdt@miniTicker")
    delta = Delta(client)
    feed.mini_ticker("METRICUSDT", close=5, volume=11)
    assert poll(lambda: delta.after()("tickerbell_alerts_fired_total", type="VOLUME_ALERT"))
    assert delta("tickerbell_alerts_fired_total", type="VOLUME_ALERT") == 1
    assert delta("tickerbell_notifications_total", type="VOLUME_ALERT",
                 source="alert") == 1
    assert delta("tickerbell_alerts_fired_total", type="PRICE_ALERT") == 0
    assert tap.ticks == 0  # Tap counts price ticks: this was a volume tick


def test_listener_reconnects_count_by_reason(app, client, feed, listen):
    uid = make_user(app, "drops@example.com")
    with app.app_context():
        alerts.create_alert(uid, {"symbol": "METRICUSDT", "type": "above", "price": 100})
    tap = listen()
    assert feed.wait_for_subscription("metricusdt@aggTrade")
    feed.trade("METRICUSDT", 50)
    assert tap.wait_ticks(1)  # a frame came: the connection worked
    delta = Delta(client)
    feed.refuse(times=1)
    feed.drop_all()  # dropped; then the at-once reconnect is refused: failed
    assert feed.wait_for_subscription("metricusdt@aggTrade", timeout=10)
    assert poll(lambda: delta.after()("tickerbell_listener_reconnects_total", reason="failed"))
    assert delta("tickerbell_listener_reconnects_total", reason="dropped") == 1
    assert delta("tickerbell_listener_reconnects_total", reason="failed") == 1
    assert delta("tickerbell_listener_reconnects_total", reason="replaced") == 0


def post_events(client, token, body, key=None):
    headers = {"Authorization": f"Bearer {token}", **({"Idempotency-Key": key} if key else {})}
    data = body if isinstance(body, bytes) else json.dumps(body)
    return client.post("/api/v1/events", data=data, headers=headers,
                       content_type="application/json")


def order(uid, **extra):
    return {"type": "ORDER_EXECUTED", "user_id": uid, "title": "Bought", **extra}


def test_events_intake_counts_each_outcome(app, client, token):
    uid = make_user(app, "events@example.com")
    delta = Delta(client)
    batch = [order(uid), order(uid), {"type": "NOPE", "user_id": uid, "title": "x"}]
    assert post_events(client, token, batch, key="k1").status_code == 422
    assert post_events(client, token, batch, key="k1").headers["Idempotent-Replayed"] == "true"
    assert post_events(client, token, batch[:1], key="k1").status_code == 422  # other content
    assert post_events(client, token, b"{not json").status_code == 422
    system = {"type": "ORDER_EXECUTED", "target": "system", "title": "Bought"}
    assert post_events(client, token, system).status_code == 202
    delta.after()
    assert delta("tickerbell_events_total", outcome="accepted") == 3
    assert delta("tickerbell_events_total", outcome="rejected") == 1
    assert delta("tickerbell_events_total", outcome="replayed") == 1
    assert delta("tickerbell_events_total", outcome="invalid") == 1
    assert delta("tickerbell_events_total", outcome="conflict") == 1
    # the system event reached the one user there is
    assert delta("tickerbell_notifications_total", type="ORDER_EXECUTED",
                 source="events") == 3


def test_each_source_of_notifications_is_told_apart(app, client, runner):
    uid = make_user(app, "sources@example.com")
    with app.app_context():
        _, url = hooks.create(uid, "TradingView")
    delta = Delta(client)
    assert client.post(urlsplit(url).path, data=b"BTC breakout",
                       headers={"Content-Type": "text/plain"}).status_code == 202
    result = runner.invoke(args=["notify", "sources@example.com", "SYSTEM_ERROR", "t", "m"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        security_events.raise_event(uid, "New sign-in", "from somewhere")
    delta.after()
    assert delta("tickerbell_notifications_total", type="WEBHOOK_ALERT", source="hook") == 1
    assert delta("tickerbell_notifications_total", type="SYSTEM_ERROR", source="cli") == 1
    assert delta("tickerbell_notifications_total", type="ACCOUNT_SECURITY",
                 source="security") == 1
    assert delta("tickerbell_notifications_total", type="SYSTEM_ERROR", source="events") == 0


def test_deliveries_count_outcomes_by_channel_and_time_the_sent_ones(make_app, smtp_server,
                                                                     http_recorder):
    twilio = http_recorder(twilio_answer)
    twilio.failures = 100  # Twilio answers 503 to everything
    app = make_app(DELIVERY_MAX_ATTEMPTS=1, **providers(smtp=smtp_server, twilio=twilio))
    client = app.test_client()
    uid = make_user(app, "deliver@example.com", delivery_email="desk@example.com",
                    phone="+44 7700 900123", sms_order_failures=True)
    delta = Delta(client)
    with app.app_context():
        router.route({"user_id": uid, "type": "ORDER_EXECUTION_FAILED", "title": "Order failed",
                      "message": "margin"})
    run_jobs(app)
    assert smtp_server.wait_for(1) and twilio.wait_for(1)
    delta.after()
    assert delta("tickerbell_deliveries_total", channel="email", status="sent") == 1
    assert delta("tickerbell_deliveries_total", channel="sms", status="failed") == 1
    assert delta("tickerbell_deliveries_total", channel="sms", status="sent") == 0
    assert delta("tickerbell_delivery_latency_seconds_count", channel="email") == 1
    assert delta("tickerbell_delivery_latency_seconds_count", channel="sms") == 0
    assert delta("tickerbell_notifications_total", type="ORDER_EXECUTION_FAILED",
                 source="app") == 1


def test_a_reminder_round_is_timed_from_when_it_was_queued(make_app, smtp_server):
    """An insisting notification's reminders go out minutes after it by design: timed from
    the notification, each would read as a delivery that many minutes late."""
    app = make_app(**providers(smtp=smtp_server))
    uid = make_user(app, "remind@example.com", delivery_email="desk@example.com")
    hour_ago = clock.now_ms() - 3_600_000
    nid = f"{hour_ago}-0-{uid}"
    with app.app_context():
        db.session.add(CriticalNotification(
            id=nid, user_id=uid, type="RISK_LIMIT_BREACHED", priority="critical",
            title="Leverage 12x", message="Over your 10x limit", data={},
            created_at=clock.ms_to_sql(hour_ago), expires_at=clock.utcnow() + timedelta(days=1)))
        rows = [DeliveryLog(notification_id=nid, user_id=uid, channel="email", round=k,
                            status=DeliveryStatus.QUEUED) for k in (0, 1)]
        db.session.add_all(rows)
        db.session.commit()
        first, reminder = (row.id for row in rows)
    for log_id, least, most in ((reminder, 0, 60), (first, 3600, 7200)):
        delta = Delta(app.test_client())
        with app.app_context():
            assert dispatch.send(log_id) == DeliveryStatus.SENT
        delta.after()
        assert delta("tickerbell_delivery_latency_seconds_count", channel="email") == 1
        assert least <= delta("tickerbell_delivery_latency_seconds_sum", channel="email") < most
    assert smtp_server.wait_for(2)


def test_a_stream_counts_while_open_and_its_messages_time_the_hub(app, auth, client):
    uid = auth.create()
    auth.login()
    delta = Delta(app.test_client())
    response = client.get("/stream", buffered=False)
    reader = EventReader(response.response)
    reader.until(lambda events: any(e.get("event") == "unread" for e in events))
    with app.app_context():
        nid, _ = inbox.store({"user_id": uid, "type": "PRICE_ALERT", "title": "live one"})
    reader.until(lambda events: any(nid in e.get("data", "") for e in events))
    assert delta.after()("tickerbell_live_streams", transport="sse") == 1
    assert delta("tickerbell_hub_lag_seconds_count") == 1
    response.close()
    assert poll(lambda: delta.after()("tickerbell_live_streams", transport="sse") == 0)


# -- the dashboard -----------------------------------------------------------------------
def exported_families(client):
    """Our families, without the `_created` time the client adds beside each counter."""
    text = client.get("/metrics").get_data(as_text=True)
    names = {f.name for f in text_string_to_metric_families(text)
             if f.name.startswith(metrics.PREFIX)}
    return {name for name in names if name.removesuffix("_created") not in names - {name}}


def dashboard_names():
    """Every metric family a panel's PromQL names (suffixes of counters, histograms cut)."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in board["panels"] for target in panel.get("targets", ())]
    names = {re.sub(r"_(total|bucket|count|sum)$", "", name)
             for expr in exprs for name in re.findall(r"\btickerbell_[a-z_]+", expr)}
    return board, exprs, names


def test_the_dashboard_uses_exactly_the_exported_names(client):
    board, exprs, used = dashboard_names()
    assert board["title"] and board["schemaVersion"] and exprs
    exported = exported_families(client)
    assert used - exported == set(), "the dashboard names metrics the app does not export"
    assert exported - used == set(), "exported metrics without a panel"
