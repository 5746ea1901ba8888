"""A web worker told to stop (SIGTERM, as systemd, gunicorn's own restarts and `make run`'s
Ctrl-C send) while browsers hold live streams, SSE and WebSocket. An SSE stream is served by
the hub (webapp/live/handoff.py); a WebSocket holds its request, and gunicorn waits for
requests. The worker ends its streams as it stops (gunicorn.conf.py), so it finishes at
once: it runs its exit hook and leaves the processes' list, instead of being killed at the
graceful timeout and listed as silent for an hour. Browsers reconnect and replay."""

import json

import pytest
import websocket

from tests.hub import poll
from tests.live_server import cookie_header, login
from tests.sse_helpers import open_stream
from tests.test_live_workers import on_worker
from webapp import keys
from webapp.accounts import service as accounts
from webapp.extensions import db
from webapp.models import User

PASSWORD = "correct horse"


@pytest.fixture
def site(make_live_site):
    live = make_live_site("shutdown", env={"WEB_CONCURRENCY": "2", "STREAM_KEEPALIVE_S": "60"})
    assert poll(lambda: len(live.server.worker_pids()) == 2, timeout=30)
    return live


def web_entries(site):
    with site.app.app_context():
        listed = site.app.extensions["redis"].hgetall(keys.PROCESSES)
    return {json.loads(body)["pid"] for field, body in listed.items()
            if (field.decode() if isinstance(field, bytes) else field).startswith("web:")}


def test_a_stopping_worker_ends_its_streams_and_leaves_the_list(site):
    site.user("closer@example.com", PASSWORD)
    cookie = cookie_header(login(site.url, "closer@example.com", PASSWORD))
    workers = site.server.worker_pids()
    assert poll(lambda: web_entries(site) == set(workers), timeout=30)
    with site.app.app_context():
        _, key = accounts.create_api_key(
            db.session.scalar(db.select(User).where(User.email == "closer@example.com")),
            "ws")
    streams, sockets = [], []
    for pid in workers:  # an SSE stream and a WebSocket held by each worker
        with on_worker(site.server, pid):
            sock, reader = open_stream(site.server.port, cookie)
            reader.until(lambda ev: ev)  # its opening: the worker serves it
            ws = websocket.create_connection(
                f"ws://127.0.0.1:{site.server.port}/ws?api_key={key}", timeout=15)
            ws.recv()  # its opening
        streams.append((sock, reader))
        sockets.append(ws)
    try:
        site.server.stop()  # SIGTERM, as systemd sends
        log = site.server.log_path.read_text(errors="replace")
        assert "graceful timeout" not in log.lower(), log[-2000:]
        assert "SIGKILL" not in log, log[-2000:]
        assert not web_entries(site) & set(workers)
        for _, reader in streams:  # each stream ended: the browser reconnects and replays
            with pytest.raises((ConnectionError, OSError)):
                reader.until(lambda ev: False, timeout=5)
        for ws in sockets:
            with pytest.raises((websocket.WebSocketException, OSError)):
                while True:
                    ws.recv()
    finally:
        for sock, _ in streams:
            sock.close()
        for ws in sockets:
            ws.close()
        site.server.start()
