"""The notification settings page: HTMX saves per field, validation, follows, push devices."""

import socket

import pytest

from tests.conftest import csrf_token
from tests.hub import make_user
from webapp.exceptions import InvalidInput
from webapp.extensions import db
from webapp.models import PushSubscription, StrategyFollow
from webapp.preferences import service as preferences

pytestmark = pytest.mark.both_databases
PAGE = "/settings/notifications/"
HX = {"HX-Request": "true"}


@pytest.fixture
def logged_in(client, auth):
    uid = auth.create()
    auth.login()
    return uid


def save(client, field, value=None):
    data = {"field": field, "csrf_token": csrf_token(client, PAGE)}
    if value is not None:
        data[field] = value
    return client.post(PAGE + "field", data=data, headers=HX)


def pref(app, uid):
    with app.app_context():
        row = preferences.preferences_for(uid)
        db.session.expunge(row)
        return row


def test_page_shows_every_setting(client, logged_in):
    page = client.get(PAGE).get_data(as_text=True)
    for name in ("rt_order_execution", "rt_strategy_status", "rt_price_alerts",
                 "sms_risk_violations", "sms_order_failures", "sms_account_security",
                 "email_daily_summary", "email_weekly_performance", "email_monthly_statements",
                 "max_per_minute", "quiet_start", "quiet_end", "timezone", "phone",
                 "delivery_email", "strategy_id", "push-devices"):
        assert f'"{name}"' in page, name


GOOD = [
    ("phone", "+1 (415) 555-0123", "+14155550123"),
    ("timezone", "America/New_York", "America/New_York"),
    ("quiet_start", "22:30", "22:30"),
    ("max_per_minute", "1000", 1000),
    ("insist_every_min", "15", 15),
    ("insist_rounds", "20", 20),
    ("delivery_email", "Desk@Example.com", "Desk@example.com"),
    ("sms_risk_violations", "1", True),
    ("rt_price_alerts", None, False),  # an unchecked box sends nothing
]
BAD = [
    ("phone", "4155550123", "international format"),
    ("phone", "+1415555012345678", "international format"),
    ("timezone", "Mars/Olympus", "time zone"),
    ("timezone", "../../etc/passwd", "time zone"), ("timezone", "Factory", "time zone"),
    ("timezone", "localtime", "time zone"),
    ("quiet_end", "25:00", "24-hour"),
    ("quiet_start", "1\u0662:00", "24-hour"),  # Arabic-Indic digit: \d would take it
    ("phone", "+1415555\u0660123", "international format"),
    ("max_per_minute", "0", "between 1 and 1000"),
    ("max_per_minute", "1001", "between 1 and 1000"),
    ("max_per_minute", "ten", "whole number"),
    ("max_per_minute", "1" + "0" * 400, "between 1 and 1000"),  # was "not a whole number"
    ("max_per_minute", str(2**63), "between 1 and 1000"),
    ("max_per_minute", "-" + "9" * 30, "between 1 and 1000"),
    ("max_per_minute", "\u0666\u0665", "whole number"),  # Arabic-Indic 65: int() takes it
    ("insist_every_min", "1_000", "whole number"),
    ("delivery_email", "not-an-email", "email"),
    ("insist_every_min", "0", "between 1 and 1440"),
    ("insist_rounds", "21", "between 1 and 20"),
    ("insist_rounds", "NaN", "whole number"),
    ("insist_types", "PRICE_ALERT<script>", "Unknown notification type"),
    ("is_admin", "1", "Unknown"),
]


def test_each_field_saves_on_change(app, client, logged_in):
    # One login for all cases: password hashing makes a login cost ~0.3 s.
    for field, value, stored in GOOD:
        response = save(client, field, value)
        assert response.status_code == 200, field
        assert "Saved" in response.get_data(as_text=True)
        assert getattr(pref(app, logged_in), field) == stored, field


def test_bad_values_are_refused_with_the_reason(app, client, logged_in):
    before = pref(app, logged_in)
    for field, value, message in BAD:
        response = save(client, field, value)
        assert response.status_code == 422, (field, value)
        assert message.lower() in response.get_data(as_text=True).lower(), (field, value)
        if hasattr(before, field):
            assert getattr(pref(app, logged_in), field) == getattr(before, field)


def test_plain_form_saves_everything_without_javascript(app, client, logged_in):
    response = client.post(PAGE, data={
        "csrf_token": csrf_token(client, PAGE), "timezone": "Asia/Tokyo", "max_per_minute": "5",
        "quiet_start": "23:00", "quiet_end": "06:00", "phone": "", "delivery_email": "",
        "sms_account_security": "1"})
    assert response.status_code == 303
    saved = pref(app, logged_in)
    assert (saved.timezone, saved.max_per_minute, saved.quiet_start) == ("Asia/Tokyo", 5, "23:00")
    assert saved.sms_account_security and not saved.rt_price_alerts


def test_quiet_hours_must_not_start_and_end_together(client, logged_in):
    assert save(client, "quiet_start", "22:00").status_code == 200
    response = save(client, "quiet_end", "22:00")
    assert response.status_code == 422 and "another time" in response.get_data(as_text=True)


def test_follow_and_unfollow_a_strategy(app, client, logged_in):
    token = csrf_token(client, PAGE)
    response = client.post(PAGE + "follow", data={"strategy_id": "momentum-btc",
                                                   "csrf_token": token}, headers=HX)
    assert response.status_code == 200 and "momentum-btc" in response.get_data(as_text=True)
    bad = client.post(PAGE + "follow", data={"strategy_id": "no spaces!", "csrf_token": token},
                      headers=HX)
    assert bad.status_code == 422
    with app.app_context():
        assert db.session.scalars(db.select(StrategyFollow.strategy_id)).all() == ["momentum-btc"]
    for impossible in ("nul\x00byte", "", "x" * 65):  # PostgreSQL refused NUL with a 500
        gone = client.post(PAGE + "unfollow", data={"strategy_id": impossible,
                                                     "csrf_token": token}, headers=HX)
        assert gone.status_code == 422 and "momentum-btc" in gone.get_data(as_text=True)
    client.post(PAGE + "unfollow", data={"strategy_id": "momentum-btc", "csrf_token": token},
                headers=HX)
    with app.app_context():
        assert db.session.scalars(db.select(StrategyFollow.strategy_id)).all() == []


def test_push_subscribe_and_unsubscribe_per_device(app, client, logged_in):
    token = csrf_token(client, PAGE)
    sub = {"endpoint": "https://push.example.net/send/abc",
           "keys": {"p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1X"
                              "bjhazAkj7I99e8QcYP7DkM", "auth": "tBHItJI5svbpez7KI4CCXg"}}
    response = client.post(PAGE + "push/subscribe", json=sub, headers={"X-CSRFToken": token})
    assert response.status_code == 201
    again = client.post(PAGE + "push/subscribe", json=sub, headers={"X-CSRFToken": token})
    assert again.status_code == 201  # the same device twice is one row
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(PushSubscription.id))) == 1
    bad = client.post(PAGE + "push/subscribe", json={"endpoint": "x"},
                      headers={"X-CSRFToken": token})
    assert bad.status_code == 422
    gone = client.post(PAGE + "push/unsubscribe", json={"endpoint": sub["endpoint"]},
                       headers={"X-CSRFToken": token})
    assert gone.json == {"removed": True}


def test_settings_need_login_and_csrf(client, auth):
    assert client.get(PAGE).status_code == 302
    auth.create()
    auth.login()
    response = client.post(PAGE + "field", data={"field": "phone", "phone": "+14155550123"})
    assert response.status_code == 400


KEYS = {"p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8"
                  "QcYP7DkM", "auth": "tBHItJI5svbpez7KI4CCXg"}


@pytest.mark.parametrize("endpoint", [
    "http://push.example.net/send/abc", "https://169.254.169.254/latest/meta-data",
    "https://127.0.0.1/x", "https://localhost:8443/x", "https://api.localhost./x",
    "https://[::1]/x", "https://[::ffff:127.0.0.1]/x", "https://10.0.0.5/x",
    "https://192.168.1.1/", "https://100.64.0.1/", "https://0.0.0.0/", "https://2130706433/",
    "https://127.1/", "https://0x7f000001/", "https://[fe80::1]/", "ftp://push.example.net/",
    "https:///nohost", "https://[::1/broken",
    # spellings an HTTP client decodes into an inward address after the check
    "https://%31%32%37.0.0.1/x", "https://\uff11\uff12\uff17.\uff10.\uff10.\uff11/",
    "https://127.0.0.1\u3002/", "https://[64:ff9b::7f00:1]/", "https://[2002:7f00:1::]/",
    "https://[fe80::1%25eth0]/", "https://x@push.example.net/send/abc"])
def test_push_endpoints_that_point_inwards_are_refused(endpoint):
    assert not preferences.push_endpoint_allowed(endpoint, {})


def test_a_push_endpoint_whose_name_resolves_inwards_is_refused_at_save(app, monkeypatch):
    """As a destination's. The resolver stands for a DNS server answering a private address."""
    real = socket.getaddrinfo

    def resolver(host, *args, **kwargs):
        if host != "push.inward.example":
            return real(host, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", 443))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with app.app_context(), pytest.raises(InvalidInput, match="not a local or private"):
        preferences.save_push_subscription(1, {"endpoint": "https://push.inward.example/p",
                                               "keys": KEYS})


def test_push_endpoints_of_public_services_are_accepted_and_tests_may_allow_loopback():
    for endpoint in ("https://fcm.googleapis.com/fcm/send/abc", "https://8.8.8.8/push",
                     "https://updates.push.services.mozilla.com/wpush/v2/x"):
        assert preferences.push_endpoint_allowed(endpoint, {}), endpoint
    allow = {"PUSH_ALLOW_INSECURE_ENDPOINTS": True}
    assert preferences.push_endpoint_allowed("http://127.0.0.1:8080/push/1", allow)
    assert not preferences.push_endpoint_allowed("file:///etc/passwd", allow)


def test_subscribe_refuses_internal_endpoints_and_other_users_devices(app, client, logged_in):
    token = {"X-CSRFToken": csrf_token(client, PAGE)}
    metadata = client.post(PAGE + "push/subscribe", headers=token,
                           json={"endpoint": "http://169.254.169.254/latest", "keys": KEYS})
    assert metadata.status_code == 422 and "https" in metadata.json["detail"]["subscription"]
    other = make_user(app, "other@example.com")
    endpoint = "https://push.example.net/send/shared-browser"
    with app.app_context():
        preferences.save_push_subscription(other, {"endpoint": endpoint, "keys": KEYS})
    taken = client.post(PAGE + "push/subscribe", json={"endpoint": endpoint, "keys": KEYS},
                        headers=token)
    assert taken.status_code == 422 and "another account" in taken.json["detail"]["subscription"]
    with app.app_context():
        rows = db.session.execute(db.select(PushSubscription.user_id,
                                            PushSubscription.endpoint)).all()
    assert [tuple(r) for r in rows] == [(other, endpoint)]


def test_unsubscribe_with_an_impossible_id_or_body_removes_nothing(app, client, logged_in):
    token = csrf_token(client, PAGE)
    huge = client.post(PAGE + "push/unsubscribe", data={"id": "9" * 30, "csrf_token": token},
                       headers=HX)
    assert huge.status_code == 200
    odd = client.post(PAGE + "push/unsubscribe", json=[1], headers={"X-CSRFToken": token})
    assert odd.status_code == 422 and odd.json["error"] == "invalid_input"
    # deep (and over the 16 KiB a body may hold), cut short
    for body, status in (("[" * 100_000 + "]" * 100_000, 413), ('{"endpoint": "x"', 422)):
        for path in ("push/unsubscribe", "push/subscribe"):
            refused = client.post(PAGE + path, data=body, content_type="application/json",
                                  headers={"X-CSRFToken": token})
            assert refused.status_code == status
            assert status == 413 or refused.json["error"] == "invalid_input"
    with app.app_context():
        assert preferences.push_subscriptions(logged_in) == []
    control = client.post(PAGE + "push/subscribe", headers={"X-CSRFToken": token}, json={
        "endpoint": "https://push.example.net/send/x", "keys": {**KEYS, "p256dh": "a\u0000"}})
    assert control.status_code == 422
    for keys in ({"p256dh": "x", "auth": "y"}, {**KEYS, "auth": KEYS["auth"][:-2]},
                 {**KEYS, "p256dh": "A" + KEYS["p256dh"][1:]}):  # short, or no 0x04 point
        unusable = client.post(PAGE + "push/subscribe", headers={"X-CSRFToken": token},
                               json={"endpoint": "https://push.example.net/send/y", "keys": keys})
        assert unusable.status_code == 422
        assert "push keys" in unusable.json["detail"]["subscription"]
    surrogate = client.post(PAGE + "push/subscribe", headers={"X-CSRFToken": token},
                            data='{"endpoint": "https://push.example.net/\\ud800", "keys": {}}',
                            content_type="application/json")
    assert surrogate.status_code == 422 and surrogate.json["error"] == "invalid_input"
    typed = client.post(PAGE + "push/unsubscribe", json={"endpoint": {"a": 1}},
                        headers={"X-CSRFToken": token})
    assert typed.status_code == 200 and typed.json == {"removed": False}


def test_insisting_types_default_to_urgent_and_critical_until_chosen(app, client, logged_in):
    page = client.get(PAGE).get_data(as_text=True)
    assert _checked(page, "RISK_LIMIT_BREACHED") and not _checked(page, "PRICE_ALERT")
    default = preferences.insisting_types(pref(app, logged_in))
    assert {"RISK_LIMIT_BREACHED", "ACCOUNT_SECURITY", "ORDER_EXECUTION_FAILED"} <= default
    assert "PRICE_ALERT" not in default

    token = csrf_token(client, PAGE)
    response = client.post(PAGE + "field", headers=HX, data={
        "field": "insist_types", "csrf_token": token,
        "insist_types": ["", "PRICE_ALERT", "RISK_VIOLATION", "PRICE_ALERT"]})
    assert response.status_code == 200
    assert preferences.insisting_types(pref(app, logged_in)) == {"PRICE_ALERT", "RISK_VIOLATION"}
    page = client.get(PAGE).get_data(as_text=True)
    checked = [name for name in ("PRICE_ALERT", "RISK_VIOLATION", "RISK_LIMIT_BREACHED")
               if f'value="{name}"' in page and _checked(page, name)]
    assert checked == ["PRICE_ALERT", "RISK_VIOLATION"]

    response = client.post(PAGE + "field", headers=HX, data={
        "field": "insist_types", "csrf_token": token, "insist_types": [""]})
    assert response.status_code == 200  # every box unchecked: nothing insists
    assert preferences.insisting_types(pref(app, logged_in)) == frozenset()


def _checked(page, name):
    start = page.index(f'id="insist-{name}"')
    return "checked" in page[start:page.index(">", start)]


def test_plain_form_without_the_insist_fields_leaves_them_alone(app, client, logged_in):
    assert save(client, "insist_rounds", "3").status_code == 200
    response = client.post(PAGE, data={
        "csrf_token": csrf_token(client, PAGE), "timezone": "UTC", "max_per_minute": "5"})
    assert response.status_code == 303
    saved = pref(app, logged_in)
    assert (saved.insist_rounds, saved.insist_types) == (3, None)
