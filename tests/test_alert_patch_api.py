"""PATCH /api/v1/alerts/{id}: any field, checked with the alert's others as a new alert is,
all or nothing; only the owner's alerts."""

import json
from datetime import timedelta

import pytest

from tests.conftest import csrf_token
from webapp import keys
from webapp.extensions import db, get_redis
from webapp.models import Alert, utcnow

ABOVE = {"symbol": "BTCUSDT", "type": "above", "price": 65000}
CHANNEL = {"symbol": "BTCUSDT", "type": "channel_exit", "low": 60000, "high": 64000}
MOVE = {"symbol": "BTCUSDT", "type": "pct_up", "pct": 3, "window": "1h"}


@pytest.fixture
def key(auth):
    auth.create()
    return {"X-API-Key": auth.api_key()}


def create(client, key, body):
    response = client.post("/api/v1/alerts", json=body, headers=key)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def patch(client, key, alert_id, body, raw=False):
    return client.patch(f"/api/v1/alerts/{alert_id}", data=body if raw else json.dumps(body),
                        headers=key, content_type="application/json")


def listed(client, key, alert_id):
    return {a["id"]: a for a in client.get("/api/v1/alerts", headers=key).get_json()}[alert_id]


EDITS = [  # the alert, the PATCH, what the answer then says
    (ABOVE, {"note": "take profit"}, {"note": "take profit"}),
    (ABOVE, {"message": "BTC at {price}\nsell"}, {"message": "BTC at {price}\nsell"}),
    (ABOVE, {"cooldown_s": 3600}, {"cooldown_s": 3600}),
    (ABOVE, {"mode": "recurring", "buffer": "0.2%"}, {"mode": "recurring", "buffer": "0.2%"}),
    (ABOVE, {"expires_at": "2999-01-01T00:00:00Z"}, {"expires_at": "2999-01-01T00:00:00Z"}),
    (ABOVE, {"symbol": "ethusdt", "price": 2500}, {"symbol": "ETHUSDT", "price": 2500}),
    (ABOVE, {"target": 70000}, {"price": 70000}),
    (ABOVE, {"type": "crossing_up"}, {"type": "crossing_up", "price": 65000}),  # keeps price
    (ABOVE, {"type": "pct_down", "pct": 4, "window": "15m"},
     {"type": "pct_down", "pct": 4, "window": "15m", "buffer": 0.5}),
    ({**ABOVE, "buffer": "0.1%"}, {"type": "channel_enter", "low": 1, "high": 2},
     {"type": "channel_enter", "low": 1, "high": 2, "buffer": "0.1%"}),
    (MOVE, {"pct": 7.5}, {"pct": 7.5, "window": "1h"}),
    (MOVE, {"window": "24h", "buffer": "1%"}, {"pct": 3, "window": "24h", "buffer": 1}),
    ({**MOVE, "buffer": 1}, {"type": "above", "price": 10},
     {"type": "above", "price": 10, "buffer": 0.5}),  # points do not become an amount
    (CHANNEL, {"high": 70000}, {"low": 60000, "high": 70000}),
    (CHANNEL, {"low": 61000, "type": "channel_enter"}, {"low": 61000, "type": "channel_enter"}),
]


@pytest.mark.both_databases
@pytest.mark.parametrize("body, change, says", EDITS)
def test_patch_edits_a_field_and_keeps_the_others(client, key, app, body, change, says):
    alert = create(client, key, {**body, "note": "keep me"})
    response = patch(client, key, alert["id"], change)
    assert response.status_code == 200, response.get_json()
    edited = response.get_json()
    assert {k: edited[k] for k in says} == says
    untouched = set(alert) - set(change) - set(says) - {
        "symbol_check", "last_price", "last_price_at", "distance_pct", "price", "pct",
        "window", "low", "high", "type", "buffer", "target"}
    assert {k: edited[k] for k in untouched} == {k: alert[k] for k in untouched}
    assert listed(client, key, alert["id"]) == edited


def test_a_new_price_moves_the_alert_in_the_index(client, key, app):
    alert = create(client, key, ABOVE)
    patch(client, key, alert["id"], {"price": 70000})
    with app.app_context():
        assert get_redis().zscore(keys.index("BTCUSDT", "above"), alert["id"]) == 70000


def test_an_empty_patch_changes_nothing(client, key):
    alert = create(client, key, CHANNEL)
    response = patch(client, key, alert["id"], {})
    assert response.status_code == 200 and response.get_json() == alert


def row(app, alert_id):
    with app.app_context():
        alert = db.session.get(Alert, alert_id)
        return {c.key: getattr(alert, c.key) for c in Alert.__table__.columns}


REFUSED = [  # the alert, the PATCH, the field named, what it says
    (CHANNEL, {"low": 65000}, "high", "above low"),
    (CHANNEL, {"high": 50000, "note": "fine"}, "high", "above low"),
    (CHANNEL, {"price": 5}, "price", "does not apply to type channel_exit"),
    (ABOVE, {"pct": 2}, "pct", "does not apply"),
    (ABOVE, {"type": "pct_up"}, "pct", "Required"),
    (ABOVE, {"type": "pct_up", "pct": 2}, "window", "Required"),
    (ABOVE, {"type": "channel_exit", "low": 1}, "high", "Required"),
    (ABOVE, {"type": "sideways"}, "type", "Choose one of"),
    (ABOVE, {"price": None}, "price", "Required"),
    (ABOVE, {"price": -1}, "price", "above 0"),
    (ABOVE, {"symbol": "BTC"}, "symbol", "Binance spot symbol"),
    (ABOVE, {"cooldown_s": -5}, "cooldown_s", "negative"),
    (ABOVE, {"cooldown_s": 10**9}, "cooldown_s", "30 days"),
    (ABOVE, {"message": "\udfff"}, "message", "surrogate"),
    (ABOVE, {"note": "x" * 201}, "note", "200 characters"),
    (ABOVE, {"expires_at": "2001-01-01T00:00:00Z"}, "expires_at", "future"),
    (ABOVE, {"mode": "recurring", "price": 0.2}, "buffer", "smaller than the target"),
    (MOVE, {"pct": 1001}, "pct", "at most 1000"),
    (MOVE, {"window": "2h"}, "window", "one of"),
    (MOVE, {"buffer": 3}, "buffer", "less than pct"),
    (ABOVE, {"colour": "red"}, "colour", "not a field you can change"),
    (ABOVE, {"id": 7, "note": "x"}, "id", "not a field you can change"),
    (ABOVE, {"active": False}, "active", "not a field you can change"),
]


@pytest.mark.both_databases
@pytest.mark.parametrize("body, change, field, says", REFUSED)
def test_a_refused_patch_says_why_and_writes_nothing(client, key, app, body, change, field,
                                                      says):
    alert = create(client, key, body)
    before = row(app, alert["id"])
    response = patch(client, key, alert["id"], change)
    assert response.status_code == 422
    detail = response.get_json()["detail"]
    assert says in detail.get(field, ""), detail
    assert row(app, alert["id"]) == before


@pytest.mark.parametrize("raw", ["not json", "[1]", "null", "{"])
def test_a_patch_that_is_not_an_object_is_422(client, key, raw):
    alert = create(client, key, ABOVE)
    response = patch(client, key, alert["id"], raw, raw=True)
    assert response.status_code == 422 and response.get_json()["error"] == "invalid_input"


@pytest.mark.both_databases
def test_another_users_or_a_missing_alert_is_404(client, key, auth, app):
    alert = create(client, key, ABOVE)
    auth.create("other@example.com")
    other = {"X-API-Key": auth.api_key("other@example.com")}
    before = row(app, alert["id"])
    response = patch(client, other, alert["id"], {"note": "mine now"})
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"
    assert row(app, alert["id"]) == before
    for alert_id in (alert["id"] + 1, 0, 2**31, 10**30):
        assert patch(client, key, alert_id, {"note": "x"}).status_code == 404


def test_patch_needs_credentials_and_a_session_needs_the_csrf_token(client, auth, key):
    alert = create(client, key, ABOVE)
    assert patch(client, {}, alert["id"], {"note": "x"}).status_code == 401
    auth.login()
    assert patch(client, {}, alert["id"], {"note": "x"}).status_code == 400
    token = csrf_token(client, "/dashboard")
    response = patch(client, {"X-CSRFToken": token}, alert["id"], {"note": "x"})
    assert response.status_code == 200 and response.get_json()["note"] == "x"


def test_an_expired_alert_keeps_its_expiry_when_the_patch_does_not_name_it(client, key, app):
    alert = create(client, key, {**ABOVE, "expires_at": "2999-01-01T00:00:00Z"})
    passed = utcnow() - timedelta(hours=1)
    with app.app_context():
        db.session.get(Alert, alert["id"]).expires_at = passed
        db.session.commit()
    edited = patch(client, key, alert["id"], {"note": "old news"}).get_json()
    assert edited["note"] == "old news" and edited["status"] == "expired"
    assert row(app, alert["id"])["expires_at"] == passed
    assert patch(client, key, alert["id"], {"expires_at": None}).get_json()["status"] == "active"
