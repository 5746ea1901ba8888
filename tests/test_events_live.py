"""Events API to live streams, served by gunicorn: a broadcast reaches every connected user."""

import pytest
import requests

from tests.live_server import cookie_header, login
from tests.sse_helpers import open_stream
from webapp.accounts import service as accounts
from webapp.extensions import db
from webapp.notify import service_tokens

PASSWORD = "correct horse"
USERS = 3


@pytest.fixture(scope="module")
def site(make_live_site):
    live = make_live_site("events-live", env={"STREAM_KEEPALIVE_S": "60"})
    with live.app.app_context():
        for i in range(USERS):
            accounts.create_user(f"u{i}@example.com", PASSWORD)
        token = service_tokens.create("risk-engine")[1]
        db.session.remove()
    return {"server": live.server, "token": token}


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
