"""GET /api/v1/notifications/{nid}: the owner reads one notification, whole; no one else can."""

import pytest

from webapp import clock
from webapp.inbox import service as inbox


@pytest.fixture
def api(auth):
    """An API-key client for trader@example.com; returns (headers, user id)."""
    uid = auth.create()
    auth.create("other@example.com")
    return {"X-API-Key": auth.api_key()}, uid


def store(app, uid, created_ms, **extra):
    with app.app_context():
        return inbox.store({"user_id": uid, "type": "PRICE_ALERT", "title": "ETHUSDT below 3000",
                            "message": "Traded at 2999.5", "alert_id": "7",
                            "data": {"symbol": "ETHUSDT", "condition": "below", "target": 3000,
                                     "price": 2999.5}, **extra}, now_ms=created_ms)[0]


def test_the_owner_gets_the_whole_notification(client, app, api):
    headers, uid = api
    created = clock.now_ms()
    nid = store(app, uid, created, order_id="o-9")
    response = client.get(f"/api/v1/notifications/{nid}", headers=headers)
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == {
        "id": nid, "alert_id": 7, "symbol": "ETHUSDT", "alert_type": "below",
        "trigger_price": 3000, "current_price": 2999.5, "timestamp": clock.ms_to_iso(created),
        "status": "unread", "type": "PRICE_ALERT", "title": "ETHUSDT below 3000",
        "message": "Traded at 2999.5", "priority": "normal", "created_at": created,
        "strategy_id": None, "order_id": "o-9", "data": {
            "symbol": "ETHUSDT", "condition": "below", "target": 3000, "price": 2999.5},
        "insist": None}


def test_reading_it_shows_read_once_marked(client, app, api):
    headers, uid = api
    nid = store(app, uid, clock.now_ms())
    assert client.patch(f"/api/v1/notifications/{nid}/read", headers=headers).status_code == 200
    assert client.get(f"/api/v1/notifications/{nid}", headers=headers).json["status"] == "read"


def test_another_users_notification_is_not_found(client, app, api, auth):
    headers, _ = api
    other = {"X-API-Key": auth.api_key("other@example.com")}
    nid = store(app, api[1], clock.now_ms())
    theirs = client.get(f"/api/v1/notifications/{nid}", headers=other)
    missing = client.get("/api/v1/notifications/1-0", headers=headers)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.get_json() == missing.get_json()
    assert client.get(f"/api/v1/notifications/{nid}").status_code == 401
