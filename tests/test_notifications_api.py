import json
import threading

import pytest

from devtools import redisd
from tests.conftest import csrf_token
from tests.hub import poll
from webapp import clock, create_app
from webapp.accounts import service as accounts
from webapp.core import processes
from webapp.extensions import db, get_redis
from webapp.inbox import service as inbox


@pytest.fixture
def api(client, auth, app):
    """An API-key client for trader@example.com; returns (headers, user id)."""
    uid = auth.create()
    auth.create("other@example.com")
    headers = {"X-API-Key": auth.api_key()}
    clear_inboxes(app)
    return headers, uid


def clear_inboxes(app):
    """Forget what account set-up notified (security events), so tests count their own."""
    with app.app_context():
        r = get_redis()
        for pattern in ("tb:replay:*", "tb:read:*", "tb:readmark:*"):
            for key in r.scan_iter(pattern):
                r.delete(key)


def store(app, uid, n=1, **extra):
    with app.app_context():
        return [inbox.store({"user_id": uid, "type": "PRICE_ALERT", "title": f"t{i}",
                             "message": "m", "alert_id": "7",
                             "data": {"symbol": "ETHUSDT", "condition": "below", "target": 3000,
                                      "price": 2999.5}, **extra})[0] for i in range(n)]


def test_list_is_a_bare_list_newest_first_with_the_briefs_fields(client, app, api):
    headers, uid = api
    first, second = store(app, uid, 2)
    response = client.get("/api/v1/notifications", headers=headers)
    assert response.status_code == 200
    body = response.get_json()
    assert [n["id"] for n in body] == [second, first]
    for field in ("id", "alert_id", "symbol", "alert_type", "trigger_price", "current_price",
                  "timestamp", "status", "type", "title", "message", "priority"):
        assert field in body[0]
    assert body[0]["alert_id"] == 7 and body[0]["symbol"] == "ETHUSDT"
    assert response.headers["X-Unread-Count"] == "2"
    assert "X-Next-Cursor" not in response.headers


def test_pages_follow_the_cursor_header(client, app, api):
    headers, uid = api
    made = store(app, uid, 5)
    seen, url = [], "/api/v1/notifications?limit=2"
    while url:
        response = client.get(url, headers=headers)
        seen += [n["id"] for n in response.get_json()]
        link = response.headers.get("Link")
        url = link[1:link.index(">")] if link else None
        if url:
            assert response.headers["X-Next-Cursor"] in url and "limit=2" in url
    assert seen == made[::-1]


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x", "limit=%C2%B2",
                                   "limit=" + "9" * 5000, "cursor=nope", "cursor=0-0",
                                   "unread=2", "unread=maybe",
                                   "type=BOGUS", "type=price_alert"])
def test_bad_page_arguments_answer_400(client, api, query):
    response = client.get(f"/api/v1/notifications?{query}", headers=api[0])
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_input"


def test_filters_by_unread_and_type(client, app, api):
    headers, uid = api
    price = store(app, uid, 2)
    order = store(app, uid, 1, type="ORDER_EXECUTED")
    client.patch(f"/api/v1/notifications/{price[0]}/read", headers=headers)
    unread = client.get("/api/v1/notifications?unread=1", headers=headers).get_json()
    assert [n["id"] for n in unread] == [order[0], price[1]]
    typed = client.get("/api/v1/notifications?type=ORDER_EXECUTED", headers=headers).get_json()
    assert [n["id"] for n in typed] == order


def test_patch_read_returns_the_item_and_is_idempotent(client, app, api):
    headers, uid = api
    [nid] = store(app, uid)
    for _ in range(2):
        response = client.patch(f"/api/v1/notifications/{nid}/read", headers=headers)
        assert response.status_code == 200
        assert response.get_json()["status"] == "read" and response.get_json()["id"] == nid
        assert response.headers["X-Unread-Count"] == "0"


def test_read_all(client, app, api):
    headers, uid = api
    store(app, uid, 3)
    response = client.post("/api/v1/notifications/read-all", headers=headers)
    assert response.get_json() == {"updated": 3, "unread_count": 0}
    assert client.get("/api/v1/notifications?unread=1", headers=headers).get_json() == []


def test_delete_answers_204_then_404(client, app, api):
    headers, uid = api
    [nid] = store(app, uid)
    assert client.delete(f"/api/v1/notifications/{nid}", headers=headers).status_code == 204
    response = client.delete(f"/api/v1/notifications/{nid}", headers=headers)
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


@pytest.mark.parametrize("method, path", [
    ("get", "/api/v1/notifications/{nid}"), ("patch", "/api/v1/notifications/{nid}/read"),
    ("delete", "/api/v1/notifications/{nid}")])
def test_another_users_or_missing_ids_answer_404(client, app, api, method, path):
    headers, _ = api
    [theirs] = store(app, 2)  # other@example.com
    for nid in (theirs, "999999", "abc", "%2e%2e%2f"):  # the last: no redirect to a merged //
        response = getattr(client, method)(path.format(nid=nid), headers=headers)
        assert response.status_code == 404 and response.is_json
    with app.app_context():
        assert inbox.get(2, theirs)["status"] == "unread"


@pytest.mark.parametrize("method, path", [
    ("get", "/api/v1/notifications"), ("get", "/api/v1/notifications/1"),
    ("patch", "/api/v1/notifications/1/read"), ("post", "/api/v1/notifications/read-all"),
    ("delete", "/api/v1/notifications/1")])
def test_no_auth_answers_401_json(client, method, path):
    response = getattr(client, method)(path)
    assert response.status_code == 401 and response.get_json()["error"] == "unauthorized"


def test_a_bad_key_answers_401(client):
    response = client.get("/api/v1/notifications", headers={"X-API-Key": "tb_nope"})
    assert response.status_code == 401


def test_session_callers_need_the_csrf_token_to_change_things(client, app, auth):
    uid = auth.create()
    auth.login()
    clear_inboxes(app)
    [nid] = store(app, uid)
    assert client.get("/api/v1/notifications").status_code == 200
    assert client.patch(f"/api/v1/notifications/{nid}/read").status_code == 400
    token = csrf_token(client, "/dashboard")
    response = client.patch(f"/api/v1/notifications/{nid}/read", headers={"X-CSRFToken": token})
    assert response.status_code == 200


def test_health_is_public_and_degraded_without_a_listener(client):
    response = client.get("/api/v1/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["redis"] == "ok" and body["monitoring"]["status"] == "down"
    assert body["circuit"]["state"] == "closed" and isinstance(body["uptime_s"], int)
    assert body["version"] and set(body["queues"]) == {"high", "default", "low", "stream"}


def _beat(*roles):
    for role in roles:
        processes.Heartbeat(get_redis(), role).beat()


def test_health_is_200_with_a_live_connected_listener(client, app):
    with app.app_context():
        get_redis().hset("tb:listener", mapping={
            "state": "connected", "heartbeat": clock.now_ms(),
            "last_tick_ms": 1_700_000_000_000, "streams": 3})
        _beat("worker", "listener", "scheduler")
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok" and body["monitoring"]["stream"] == "open"
    assert body["last_tick"] == "2023-11-14T22:13:20.000Z"
    assert body["processes"]["worker"]["alive"] == 1 and body["missing"] == []


def test_health_names_a_missing_process_and_its_restarts(client, app, monkeypatch):
    with app.app_context():
        get_redis().hset("tb:listener", mapping={
            "state": "connected", "heartbeat": clock.now_ms()})
        monkeypatch.setenv("TICKERBELL_RESTARTS", "3")
        _beat("listener", "scheduler")
        gone = processes.Heartbeat(get_redis(), "worker")
        gone.body["pid"], gone.body["restarts"] = -1, 7  # its own run's, not the live ones
        gone.field += ":old"
        get_redis().hset(processes.KEY, gone.field, json.dumps(
            {**gone.body, "beat_ms": clock.now_ms() - processes.STALE_MS - 1}))
    response = client.get("/api/v1/health")
    body = response.get_json()
    assert response.status_code == 503 and body["missing"] == ["worker"]
    assert body["processes"]["worker"]["processes"][0]["alive"] is False
    assert body["processes"]["listener"]["restarts"] == 3
    assert body["processes"]["worker"]["restarts"] == 0


def test_health_is_503_when_the_breaker_is_open(client, app):
    with app.app_context():
        r = get_redis()
        r.hset("tb:listener", mapping={"state": "connected", "heartbeat": clock.now_ms()})
        r.hset("tb:breaker:binance", mapping={"state": "open", "failures": 5,
                                              "opened_at": clock.now_ms() / 1000})
    body = client.get("/api/v1/health").get_json()
    assert body["circuit"]["state"] == "open" and body["status"] == "degraded"


def test_a_stale_heartbeat_is_a_dead_listener(client, app):
    with app.app_context():
        get_redis().hset("tb:listener", mapping={
            "state": "connected", "heartbeat": clock.now_ms() - 60_000})
    response = client.get("/api/v1/health")
    assert response.status_code == 503 and response.get_json()["monitoring"]["listener"] == "down"


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own, so stopping it leaves the session's alone."""
    process, url = redisd.start(tmp_path / "own-redis", appendonly=False)
    state = {"process": process, "url": url}
    yield state
    redisd.stop(state["process"])


def _hammer(app, headers, stop, seen):
    client = app.test_client()
    while not stop.is_set():
        response = client.get("/api/v1/notifications", headers=headers)
        seen.append((response.status_code, response.is_json))


def test_redis_stopped_mid_request_answers_503_json_then_recovers(own_redis, db_url, tmp_path):
    app = create_app({"TESTING": True, "SECRET_KEY": "t", "SQLALCHEMY_DATABASE_URI": db_url,
                      "REDIS_URL": own_redis["url"], "INSTANCE_PATH": str(tmp_path)})
    with app.app_context():
        db.create_all()
        user = accounts.create_user("down@example.com", "correct horse")
        key, uid = accounts.create_api_key(user, "t")[1], user.id
    client, headers = app.test_client(), {"X-API-Key": key}
    assert client.get("/api/v1/notifications", headers=headers).status_code == 200
    stop, seen = threading.Event(), []
    worker = threading.Thread(target=_hammer, args=(app, headers, stop, seen))
    worker.start()
    assert poll(lambda: len(seen) >= 5)
    redisd.stop(own_redis["process"])  # while requests are in flight
    assert poll(lambda: (503, True) in seen[-3:])
    stop.set()
    worker.join()
    assert set(seen) <= {(200, True), (503, True)}
    live_id = f"{clock.now_ms()}-0-{uid}"  # an id not yet expired, so Redis is asked
    for path in ("/api/v1/notifications", f"/api/v1/notifications/{live_id}", "/api/v1/health"):
        response = client.get(path, headers=headers)
        assert response.status_code == 503 and response.is_json, path
    assert client.get("/api/v1/health").get_json()["redis"] == "down"
    own_redis["process"], _ = redisd.start(tmp_path / "own-redis", appendonly=False)
    assert client.get("/api/v1/notifications", headers=headers).status_code == 200
    with app.app_context():
        get_redis().connection_pool.disconnect()
        db.engine.dispose()


def test_pages_poll_a_banner_that_names_what_is_degraded(client, app, auth):
    auth.create()
    auth.login()
    page = client.get("/dashboard").get_data(as_text=True)
    assert 'hx-get="/status"' in page
    text = client.get("/status").get_data(as_text=True)
    assert "Market feed disconnected" in text and "deliveries are paused" in text
    with app.app_context():
        get_redis().hset("tb:listener", mapping={
            "state": "connected", "heartbeat": clock.now_ms(),
            "last_tick_ms": 1_700_000_000_000})
        _beat("worker", "listener", "scheduler")
    assert client.get("/status").get_data(as_text=True).strip() == ""


def test_a_heartbeat_that_meets_another_redis_error_beats_on(app, monkeypatch):
    """Redis full (OOM) or read-only a moment: the beat thread must not die, or the process
    would show as gone while it works (and the sweep would send its deliveries again)."""
    import redis as redis_py

    with app.app_context():
        r = get_redis()
        beat = processes.Heartbeat(r, "worker", every_s=0.05)
        real, calls = beat.beat, []

        def flaky():
            calls.append(1)
            if len(calls) <= 2:
                raise redis_py.exceptions.ResponseError("OOM command not allowed")
            real()

        monkeypatch.setattr(beat, "beat", flaky)
        beat.start()
        try:
            assert poll(lambda: r.hexists(processes.KEY, beat.field), timeout=5)
            assert processes.beating == beat.field
        finally:
            beat.end()
        assert processes.beating is None


def test_a_heartbeat_lands_soon_after_redis_is_back_not_a_beat_later(app, refused_port):
    """Its beats failed through an outage: the first after it comes within RETRY_BEAT_S, so
    the health check does not count a live process gone for up to a beat (the banner said
    "no background worker is running" just after Redis came back)."""
    import redis as redis_py

    with app.app_context():
        r, away = get_redis(), redis_py.Redis(port=refused_port, retry=None)
        clients, asked = [away], []

        def client():
            asked.append(1)
            return clients[0]

        beat = processes.Heartbeat(client, "worker", every_s=60)
        beat.start()
        try:
            assert poll(lambda: len(asked) >= 2, timeout=5)  # failed, tried again: the outage
            clients[0] = r  # Redis is back
            assert poll(lambda: r.hexists(processes.KEY, beat.field), timeout=5)
        finally:
            beat.end()
