"""The alerts JSON API: the brief's contract, auth, ownership and every kind of bad input."""

import json

import pytest

from tests.conftest import csrf_token
from webapp import keys
from webapp.alerts import service as alerts
from webapp.extensions import db, get_redis
from webapp.models import Alert

GOOD = {"symbol": "BTCUSDT", "type": "above", "price": 65000}


@pytest.fixture
def key(auth):
    auth.create()
    return {"X-API-Key": auth.api_key()}


def post(client, body, headers, raw=False):
    data = body if raw else json.dumps(body)
    return client.post("/api/v1/alerts", data=data, headers=headers,
                       content_type="application/json")


@pytest.mark.both_databases
def test_create_list_delete(client, key, app):
    created = post(client, GOOD, key)
    assert created.status_code == 201
    alert = created.get_json()
    assert {k: alert[k] for k in GOOD} == GOOD
    assert alert["mode"] == "once" and alert["buffer"] == 0.5 and alert["active"] is True
    listed = client.get("/api/v1/alerts", headers=key)
    assert listed.status_code == 200 and [a["id"] for a in listed.get_json()] == [alert["id"]]
    assert client.delete(f"/api/v1/alerts/{alert['id']}", headers=key).status_code == 204
    assert client.get("/api/v1/alerts", headers=key).get_json() == []
    assert client.delete(f"/api/v1/alerts/{alert['id']}", headers=key).status_code == 404


def test_create_arms_the_index(client, key, app):
    alert = post(client, {**GOOD, "symbol": "ethusdt"}, key).get_json()
    assert alert["symbol"] == "ETHUSDT"
    with app.app_context():
        from webapp.extensions import get_redis

        assert get_redis().zscore(keys.index("ETHUSDT", "above"), alert["id"]) == 65000


@pytest.mark.both_databases
def test_optional_fields_round_trip(client, key):
    body = {**GOOD, "type": "below", "mode": "recurring", "buffer": "0.1%",
            "expires_at": "2999-01-01T00:00:00Z", "note": "take profit"}
    alert = post(client, body, key).get_json()
    assert alert["type"] == "below" and alert["mode"] == "recurring"
    assert alert["buffer"] == "0.1%" and alert["expires_at"] == "2999-01-01T00:00:00Z"
    assert alert["note"] == "take profit"


@pytest.mark.parametrize("name, expected", [
    ("ABOVE", "above"), ("price_below", "below"), ("volume_above", "volume_above"),
    ("volume", "volume_above"),
])
def test_type_names_accepted(client, key, name, expected):
    assert post(client, {**GOOD, "type": name}, key).get_json()["type"] == expected


@pytest.mark.both_databases
def test_other_users_alert_is_404(client, key, auth):
    alert = post(client, GOOD, key).get_json()
    auth.create("other@example.com")
    other = {"X-API-Key": auth.api_key("other@example.com")}
    assert client.delete(f"/api/v1/alerts/{alert['id']}", headers=other).status_code == 404
    assert client.get("/api/v1/alerts", headers=other).get_json() == []
    assert client.delete(f"/api/v1/alerts/{alert['id']}", headers=key).status_code == 204


@pytest.mark.both_databases
@pytest.mark.parametrize("alert_id", [0, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 10**30])
def test_delete_out_of_range_alert_id_is_404_json(client, key, alert_id):
    response = client.delete(f"/api/v1/alerts/{alert_id}", headers=key)
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


@pytest.mark.parametrize("method, path", [
    ("post", "/api/v1/alerts"), ("get", "/api/v1/alerts"), ("delete", "/api/v1/alerts/1"),
])
def test_no_auth_is_401(client, method, path):
    response = getattr(client, method)(path, json=GOOD)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"


def test_bad_api_key_is_401(client):
    assert post(client, GOOD, {"X-API-Key": "tb_nope"}).status_code == 401


BAD = [
    ({"type": "above", "price": 1}, "symbol"),
    ({"symbol": "BTCUSDT", "price": 1}, "type"),
    ({"symbol": "BTCUSDT", "type": "above"}, "price"),
    ({**GOOD, "price": 0}, "price"),
    ({**GOOD, "price": -5}, "price"),
    ({**GOOD, "price": "abc"}, "price"),
    ({**GOOD, "price": "100"}, "price"),
    ({**GOOD, "price": True}, "price"),
    ({**GOOD, "price": None}, "price"),
    ({**GOOD, "price": [1]}, "price"),
    ({**GOOD, "price": 1e15}, "price"),
    ({**GOOD, "price": 10**400}, "price"),
    ({**GOOD, "type": "sideways"}, "type"),
    ({**GOOD, "type": 3}, "type"),
    ({**GOOD, "symbol": "BTC"}, "symbol"),
    ({**GOOD, "symbol": "BTC-USDT"}, "symbol"),
    ({**GOOD, "symbol": "BTCUSDT<script>"}, "symbol"),
    ({**GOOD, "symbol": "A" * 21}, "symbol"),
    ({**GOOD, "symbol": 12345}, "symbol"),
    ({**GOOD, "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ({**GOOD, "expires_at": "tomorrow"}, "expires_at"),
    ({**GOOD, "expires_at": 1234}, "expires_at"),
    ({**GOOD, "mode": "twice"}, "mode"),
    ({**GOOD, "buffer": "0%"}, "buffer"),
    ({**GOOD, "buffer": "51%"}, "buffer"),
    ({**GOOD, "buffer": "abc%"}, "buffer"),
    ({**GOOD, "buffer": -1}, "buffer"),
    ({**GOOD, "mode": "recurring", "price": 0.01}, "buffer"),  # 0.5 would never re-arm
    ({**GOOD, "note": "x" * 201}, "note"),
    ({**GOOD, "note": "line\nbreak"}, "note"),
    ({**GOOD, "note": 5}, "note"),
    # fields no alert takes are refused, not ignored: each would make another alert
    ({**GOOD, "mdoe": "recurring"}, "mdoe"),
    ({**GOOD, "active": False}, "active"),
    ({**GOOD, "id": 5}, "id"),
    ({**GOOD, "user_id": 2}, "user_id"),
    ({**GOOD, "\udc00": 1}, "\udc00"),
]


@pytest.mark.parametrize("body, field", BAD)
def test_bad_input_is_422_naming_the_field(client, key, body, field, app):
    response = post(client, body, key)
    assert response.status_code == 422
    payload = response.get_json()
    assert payload["error"] == "invalid_input" and field in payload["detail"]
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Alert.id))) == 0


@pytest.mark.parametrize("raw", [
    '{"symbol": "BTCUSDT", "type": "above", "price": NaN}',
    '{"symbol": "BTCUSDT", "type": "above", "price": Infinity}',
    '{"symbol": "BTCUSDT", "type": "above", "price": -Infinity}',
    '{"symbol": "BTCUSDT", "type": "above", "price": 1e400}',
])
def test_non_finite_price_is_422(client, key, raw):
    response = post(client, raw, key, raw=True)
    assert response.status_code == 422 and "price" in response.get_json()["detail"]


@pytest.mark.parametrize("raw", [
    "not json", "", "[1, 2]", '"a string"', "null", "{", b"\xff\xfe\x00",
    "[" * 5000 + "]" * 5000,
])
def test_bad_body_is_422(client, key, raw):
    response = post(client, raw, key, raw=True)
    assert response.status_code == 422
    assert response.get_json()["error"] == "invalid_input"


def test_a_body_over_16_kib_is_413_and_makes_nothing(client, key):
    response = post(client, json.dumps({**GOOD, "note": "x" * 20000}), key, raw=True)
    assert response.status_code == 413 and response.is_json
    assert client.get("/api/v1/alerts", headers=key).get_json() == []


def test_session_caller_needs_csrf_token(client, auth):
    auth.create()
    auth.login()
    assert client.post("/api/v1/alerts", json=GOOD).status_code == 400
    token = csrf_token(client, "/dashboard")
    response = client.post("/api/v1/alerts", json=GOOD, headers={"X-CSRFToken": token})
    assert response.status_code == 201


def test_redis_down_is_503_and_nothing_is_written(make_app, tmp_path, refused_port):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{refused_port}/0")
    client = app.test_client()
    from tests.conftest import AuthActions

    auth = AuthActions(client, app)
    auth.create()
    response = post(client, GOOD, {"X-API-Key": auth.api_key()})
    assert response.status_code == 503
    assert response.get_json()["error"] == "service_unavailable"
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Alert.id))) == 0
        db.engine.dispose()


def test_a_written_alert_is_answered_even_when_its_market_cannot_be_read(client, key, app):
    """The alert is in SQL and armed: a 503 now would have its client create it twice."""
    with app.app_context():  # reading the symbol's last values fails (WRONGTYPE)
        get_redis().rpush(keys.price("BTCUSDT"), "not a price")
    created = post(client, GOOD, key)
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["last_price"] is None
    assert created.get_json()["status"] == "active"
    assert created.get_json()["symbol_check"] == "unverified"  # one of the documented three
    listed = client.get("/api/v1/alerts", headers=key)
    assert listed.status_code == 200
    assert [a["id"] for a in listed.get_json()] == [created.get_json()["id"]]
    changed = client.patch(f"/api/v1/alerts/{created.get_json()['id']}", headers=key,
                           json={"price": 66000})
    assert changed.status_code == 200 and changed.get_json()["price"] == 66000


@pytest.mark.parametrize("body, field, says", [
    ({"symbol": "BTCUSDT", "type": "above", "price": 1, "note": "\udc00"}, "note", "surrogate"),
    ({"symbol": "BTCUSDT", "type": "above", "price": "150000"}, "price", "JSON number"),
    ({"symbol": "BTCUSDT", "type": "above", "price": -5}, "price", "above 0"),
    ({"symbol": "BTCUSDT", "type": "above", "price": 1e16}, "price", "below 10^15"),
    ({"symbol": "BTCUSDT", "type": "above"}, "price", "Required"),
    ({"symbol": "BTCUSDT", "type": "above", "price": True}, "price", "Give a number"),
])
def test_bad_alert_input_says_what_is_wrong(client, auth, body, field, says):
    auth.create()
    headers = {"X-API-Key": auth.api_key()}
    response = client.post("/api/v1/alerts", json=body, headers=headers)
    assert response.status_code == 422 and says in response.json["detail"][field]
    assert client.get("/api/v1/alerts", headers=headers).json == []


def test_form_text_takes_grouped_thousands(app, auth):
    uid = auth.create()
    with app.app_context():
        alert = alerts.create_alert(uid, {"symbol": "BTCUSDT", "type": "above",
                                          "price": "65,000.5"}, text_numbers=True)
        assert alert.target == 65000.5
