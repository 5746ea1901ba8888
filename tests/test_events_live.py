"""Events API to live streams, served by gunicorn: a broadcast reaches every connected user."""

import pytest
import requests

from devtools import redisd
from tests.live_server import LiveServer, cookie_header, login
from tests.sse_helpers import open_stream
from webapp import create_app
from webapp.accounts import service as accounts
from webapp.extensions import db
from webapp.notify import service_tokens

PASSWORD = "correct horse"
USERS = 3


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("events-live")
    process, redis_url = redisd.start(tmp / "redis", appendonly=False)
    db_url = f"sqlite:///{tmp / 'live.db'}"
    env = {"DATABASE_URL": db_url, "REDIS_URL": redis_url, "SECRET_KEY": "live-secret",
           "INSTANCE_PATH": str(tmp), "STREAM_KEEPALIVE_S": "60"}
    app = create_app({"SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": redis_url,
                      "SECRET_KEY": "live-secret", "INSTANCE_PATH": str(tmp)})
    with app.app_context():
        db.create_all()
        for i in range(USERS):
            accounts.create_user(f"u{i}@example.com", PASSWORD)
        token = service_tokens.create("risk-engine")[1]
        db.session.remove()
    server = LiveServer(env, tmp / "gunicorn.log").start()
    yield {"server": server, "token": token}
    server.stop()
    with app.app_context():
        db.engine.dispose()
    redisd.stop(process)


def has(title):
    return lambda events: any(e.get("event") == "notification" and title in e.get("data", "")
                              for e in events)


def test_broadcast_reaches_every_connected_user(site):
    server = site["server"]
    streams = []
    for i in range(USERS):
        cookie = cookie_header(login(server.url, f"u{i}@example.com", PASSWORD))
        for _tab in range(2):
            streams.append(open_stream(server.port, cookie))
    for _, reader in streams:
        reader.until(lambda events: any("retry" in e for e in events))
    response = requests.post(server.url + "/api/v1/events", timeout=10, json={
        "type": "SYSTEM_MAINTENANCE", "target": "system", "title": "Exchange upgrade at 02:00",
        "message": "Trading pauses for ten minutes."},
        headers={"Authorization": f"Bearer {site['token']}", "Idempotency-Key": "maint-1"})
    assert response.status_code == 202 and len(response.json()["ids"]) == USERS
    for sock, reader in streams:
        reader.until(has("Exchange upgrade at 02:00"))
        sock.close()
