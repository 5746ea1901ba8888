"""An alert's message template: refused when it cannot work, rendered for the external
channels with the fired notification's values, the standard text when it fails anyway."""

import json
import logging
import time

import pytest

from tests.hub import make_user, run_jobs
from webapp import clock
from webapp.alerts import messages
from webapp.alerts import service as alerts
from webapp.core import secretbox
from webapp.extensions import db, get_redis
from webapp.inbox import service as inbox
from webapp.models import Alert, Destination
from worker import slowpath
from worker.matcher import Matcher

ALERT = {"symbol": "BTCUSDT", "type": "above", "price": 100}
EVERY = "|".join(f"{{{{ {name} }}}}" for name in messages.PLACEHOLDERS)


@pytest.fixture
def key(auth):
    auth.create()
    return {"X-API-Key": auth.api_key()}


def post(client, body, headers):
    return client.post("/api/v1/alerts", data=json.dumps(body), headers=headers,
                       content_type="application/json")


def count(app):
    with app.app_context():
        return db.session.scalar(db.select(db.func.count(Alert.id)))


BAD_TEMPLATES = {
    "unclosed": "{{ price",
    "unknown placeholder": "{{ volume }}",
    "unknown placeholder's attribute": "{{ user.email }}",
    "sandbox escape": "{{ ''.__class__ }}",
    "subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "template self": "{{ self }}",
    "globals": "{{ cycler.__init__.__globals__ }}",
    "a global function": "{{ range(10) }}",
    "lipsum": "{{ lipsum(99999) }}",
    "division by zero": "{{ price / 0 }}",
    "a loop": "{% for c in note %}{{ c }}{% endfor %}",
    "an assignment": "{% set x = note ~ note %}{{ x }}",
    "a macro": "{% macro m() %}x{% endmacro %}",
    "an include": "{% include 'base.html' %}",
    "a huge repeat": "{{ 'x' * 100000 }}",
    "a huge list": "{{ [symbol] * 100000 }}",
    "a nested repeat": "{{ [[note] * 1000] * 1000 }}",
    "a huge power": "{{ 9 ** 9999 }}",
    "a huge rounding": "{{ target | round(-999999999) }}",  # 10**n: hours of CPU
    "a huge ceiling": "{{ price | round(99999999, 'ceil') }}",
    "percent width": "{{ '%999999999d' % 1 }}",
    "format width": "{{ '{:>999999999}'.format(1) }}",
    "a padding method": "{{ note.ljust(999999999) }}",
    "a filter left out": "{{ symbol | center(999999999) }}",
    "an attribute of a number": "{{ price.real }}",
    "too long": "x" * 501,
    "a control character": "BTC \x00 up",
    "a number": 12,
    "a list": ["{{ symbol }}"],
}


@pytest.mark.parametrize("template", BAD_TEMPLATES.values(), ids=BAD_TEMPLATES)
def test_a_template_that_cannot_work_is_refused_on_message(app, client, key, template):
    response = post(client, {**ALERT, "message": template}, key)
    assert response.status_code == 422, response.get_json()
    assert set(response.get_json()["detail"]) == {"message"}
    assert count(app) == 0


def test_the_explanation_names_the_placeholders(client, key):
    detail = post(client, {**ALERT, "message": "{{ volume }}"}, key).get_json()["detail"]
    assert "unknown placeholder volume" in detail["message"]
    assert "{{ symbol }}" in detail["message"] and "{{ window }}" in detail["message"]


def test_a_lone_surrogate_is_refused(app, client, key):
    raw = '{"symbol": "BTCUSDT", "type": "above", "price": 100, "message": "{{ symbol }} \\udc00"}'
    response = client.post("/api/v1/alerts", data=raw, headers=key,
                           content_type="application/json")
    assert response.status_code == 422 and "surrogate" in response.get_json()["detail"]["message"]
    assert count(app) == 0


GOOD_TEMPLATES = [
    "BTC is up, sell the rip",  # plain text stays plain text
    "Price: $100 {not a placeholder} 50% off",
    EVERY,
    "{{ symbol | lower }} {{ price | round(1) }}{% if note %} - {{ note | upper }}{% endif %}",
    "{{ symbol.lower() }} at {{ (price - target) | abs }}\n{# a comment #}line two",
    "<script>alert(1)</script> {{ symbol }}",
]


@pytest.mark.parametrize("template", GOOD_TEMPLATES)
def test_working_templates_are_stored_as_written(app, client, key, template):
    response = post(client, {**ALERT, "message": template, "note": "n"}, key)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["message"] == template.strip()


def test_a_template_is_tried_with_the_values_its_kind_carries(client, key):
    half = {"message": "half the move: {{ pct / 2 }}"}
    move = post(client, {**ALERT, "type": "pct_up", "price": None, "pct": 2, "window": "1h",
                         **half}, key)
    assert move.status_code == 201, move.get_json()
    level = post(client, {**ALERT, **half}, key)  # pct is empty for a level: "" / 2 fails
    assert level.status_code == 422 and set(level.get_json()["detail"]) == {"message"}
    changed = client.patch(f"/api/v1/alerts/{move.get_json()['id']}", headers=key,
                           json={"type": "above", "price": 100, "pct": None, "window": None})
    assert changed.status_code == 422 and "message" in changed.get_json()["detail"]


def test_patch_checks_and_keeps_the_message(app, client, key):
    alert_id = post(client, {**ALERT, "message": "{{ symbol }} up"}, key).get_json()["id"]
    refused = client.patch(f"/api/v1/alerts/{alert_id}", headers=key,
                           json={"message": "{{ ''.__class__ }}"})
    assert refused.status_code == 422 and set(refused.get_json()["detail"]) == {"message"}
    with app.app_context():
        assert db.session.get(Alert, alert_id).message == "{{ symbol }} up"
    changed = client.patch(f"/api/v1/alerts/{alert_id}", headers=key,
                           json={"message": "{{ symbol }} at {{ price }}"})
    assert changed.get_json()["message"] == "{{ symbol }} at {{ price }}"
    [listed] = client.get("/api/v1/alerts", headers=key).get_json()
    assert listed["message"] == "{{ symbol }} at {{ price }}"


def test_the_page_shows_a_refused_template_escaped_with_its_reason(app, client, auth):
    from tests.conftest import csrf_token

    auth.create()
    auth.login()
    response = client.post("/alerts/", headers={"HX-Request": "true"}, data={
        "csrf_token": csrf_token(client, "/alerts/"), **ALERT, "price": "100",
        "message": "<script>x</script>{{ nope }}"})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'id="message-error"' in page and "unknown placeholder nope" in page
    assert "<script>x" not in page and "&lt;script&gt;x&lt;/script&gt;" in page


# Rendering with what the real matcher wrote.

def now_ms():
    return int(time.time() * 1000)


def fired(uid, *trades):
    """The notifications the trades fire, as stored (trades: (price, ms))."""
    matcher, nids = Matcher(get_redis()), []
    for price, at in trades:
        nids += matcher.on_price("BTCUSDT", price, at)
    return [inbox.get(uid, nid) for nid in nids]


def test_every_placeholder_of_a_level_alert(app):
    uid = make_user(app, "level@example.com")
    with app.app_context():
        alerts.create_alert(uid, {**ALERT, "note": "take profit"})
        at = now_ms()
        [n] = fired(uid, (100.5, at))
        assert messages.render(EVERY, n) == (
            f"BTCUSDT|100.5|100|above|{clock.ms_to_iso(at)}|take profit||")


def test_every_placeholder_of_a_move_alert(app):
    uid = make_user(app, "move@example.com")
    with app.app_context():
        alerts.create_alert(uid, {"symbol": "BTCUSDT", "type": "pct_up", "pct": 2,
                                  "window": "1m"})
        start = now_ms() - 5000
        [n] = fired(uid, (100, start), (101, start + 1000), (102.537, start + 2000))
        assert messages.render(EVERY, n) == (  # the move as the standard text gives it
            f"BTCUSDT|102.537|2|pct_up|{clock.ms_to_iso(start + 2000)}||2.54|1m")


def test_the_rendered_text_is_capped(app):
    note = "n" * 200
    with app.app_context():
        text = messages.render("{{ note ~ note ~ note ~ note ~ note ~ note }}", {
            "id": "1-1", "created_at": now_ms(), "data": {"note": note}})
    assert text == "n" * messages.MAX_OUTPUT


def test_another_users_alert_id_is_not_personalised(app):
    mine, theirs = make_user(app, "a@example.com"), make_user(app, "b@example.com")
    with app.app_context():
        alert = alerts.create_alert(theirs, {**ALERT, "message": "theirs: {{ symbol }}"})
        n = {"id": "1-1", "user_id": mine, "alert_id": str(alert.id), "created_at": now_ms(),
             "message": "standard", "data": {"symbol": "BTCUSDT"}}
        assert messages.personalise(n)["message"] == "standard"
        assert messages.personalise({**n, "user_id": theirs})["message"] == "theirs: BTCUSDT"
        assert messages.personalise({**n, "alert_id": str(2**40)})["message"] == "standard"


# Through the slow path and the delivery jobs to loopback receivers.

@pytest.fixture
def site(make_app, smtp_server, http_recorder):
    app = make_app(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port, SMTP_TLS="none",
                   DESTINATIONS_ALLOW_PRIVATE=True)
    receiver = http_recorder(status=200)
    uid = make_user(app, "sends@example.com")
    with app.app_context():
        dest = Destination(user_id=uid, kind="webhook", name="Hook", url_masked="http://…",
                           url_encrypted=secretbox.encrypt(receiver.url + "/hook"))
        db.session.add(dest)
        db.session.commit()
    return app, uid, receiver


def fire_and_send(app, uid):
    with app.app_context():
        [n] = fired(uid, (100.25, now_ms()))
        assert slowpath.drain("test") == 1
    run_jobs(app)
    return n


def test_email_and_webhook_carry_the_rendered_message_the_inbox_the_standard_one(
        site, smtp_server):
    app, uid, receiver = site
    with app.app_context():
        alerts.create_alert(uid, {**ALERT, "note": "<b>desk</b>", "message": (
            "{{ symbol }} hit {{ price }}{% if note %}: {{ note }}{% endif %}")})
    n = fire_and_send(app, uid)
    assert n["message"].startswith("BTCUSDT traded at 100.25, at or above your target 100")
    [mail] = smtp_server.wait_for(1)
    text = mail["msg"].get_body(("plain",)).get_content()
    html = mail["msg"].get_body(("html",)).get_content()
    assert "BTCUSDT hit 100.25: <b>desk</b>" in text and "traded at" not in text
    assert "BTCUSDT hit 100.25: &lt;b&gt;desk&lt;/b&gt;" in html
    [request] = receiver.wait_for(1)
    body = json.loads(request["body"])
    assert body["message"] == "BTCUSDT hit 100.25: <b>desk</b>" and body["id"] == n["id"]
    with app.app_context():
        assert inbox.get(uid, n["id"])["message"] == n["message"]  # the inbox keeps its text


def test_a_template_that_fails_when_firing_sends_the_standard_text(site, smtp_server, caplog):
    app, uid, receiver = site
    with app.app_context():
        alert = alerts.create_alert(uid, ALERT)
        alert.message = "{{ price / 0 }}"  # written straight to SQL, past the checks
        db.session.commit()
    with caplog.at_level(logging.WARNING, logger="webapp.alerts.messages"):
        n = fire_and_send(app, uid)
    [mail] = smtp_server.wait_for(1)
    assert n["message"] in mail["msg"].get_body(("plain",)).get_content()
    [request] = receiver.wait_for(1)
    assert json.loads(request["body"])["message"] == n["message"]
    assert "event=alert_message_failed" in caplog.text and "ZeroDivisionError" in caplog.text
