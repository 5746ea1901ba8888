"""One gunicorn with WEB_CONCURRENCY=2 gevent workers behind one port: a page served by one
worker, the stream by the other. Read state, logout and key revocation cross between them,
and a WebSocket reconnecting to the other worker replays what it missed, each once.

Which worker accepts a connection is the kernel's choice; a test steers it by stopping the
other worker (SIGSTOP) while the connection is made, and checks in /proc who holds it. (Two
gunicorns on two ports: tests/test_fanout_live.py.)"""

import json
import os
import re
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import websocket

from tests.hub import poll
from tests.live_server import cookie_header, login
from tests.sse_helpers import open_stream
from webapp.accounts import service as accounts
from webapp.extensions import db
from webapp.inbox import service as inbox

PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def site(make_live_site):
    live = make_live_site("workers", env={"WEB_CONCURRENCY": "2", "STREAM_KEEPALIVE_S": "60"})
    assert poll(lambda: len(live.server.worker_pids()) == 2, timeout=30)
    return live


@contextmanager
def on_worker(server, pid):
    """New connections made meanwhile land on worker `pid`: the others are stopped."""
    others = [p for p in server.worker_pids() if p != pid]
    for other in others:
        os.kill(other, signal.SIGSTOP)
    try:
        yield
    finally:
        for other in others:
            os.kill(other, signal.SIGCONT)


def holder(server, sock):
    """The worker holding the server end of this client socket (from /proc)."""
    ours = sock.getsockname()[1]
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(f.split(":")[1], 16) for f in fields[1:3])
        if local == server.port and remote == ours:
            inodes.add(f"socket:[{fields[9]}]")
    for pid in server.worker_pids():
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) in inodes:
                    return pid
            except OSError:  # closed while we looked
                continue
    return None


def browser(site, email):
    """A logged-in requests session whose every request opens a new connection."""
    session = login(site.url, email, PASSWORD)
    session.close()  # drop the pooled connection: the next request is accepted afresh
    session.headers["Connection"] = "close"
    return session


def csrf(session, url):
    page = session.get(url).text
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


def unread_counts(events):
    return [int(re.search(r'data-count="(\d+)"', e["data"]).group(1))
            for e in events if e.get("event") == "unread"]


def has_unread(events):
    return bool(unread_counts(events))


def notifications(events):
    return [e["id"] for e in events if e.get("event") == "notification"]


def store(site, uid, title):
    with site.app.app_context():
        return inbox.store({"user_id": uid, "type": "PRICE_ALERT", "title": title,
                            "message": "m"})


def stream_on(site, pid, session, headers=None):
    """An SSE stream accepted by worker `pid`, its opening read; (socket, reader)."""
    with on_worker(site.server, pid):
        sock, reader = open_stream(site.server.port, cookie_header(session), headers=headers)
        reader.until(has_unread)
    assert holder(site.server, sock) == pid
    return sock, reader


def ended(reader):
    with pytest.raises(ConnectionError):  # the server closes it; the wait is bounded
        reader.until(lambda events: False, timeout=15)
    return True


def test_reading_on_a_page_of_one_worker_updates_the_stream_on_the_other(site):
    one, two = site.server.worker_pids()
    uid = site.user("reader@example.com", PASSWORD)
    with on_worker(site.server, one):
        page = browser(site, "reader@example.com")
    sock, reader = stream_on(site, two, page)
    try:
        nid, eid = store(site, uid, "crossed 65000")
        reader.until(lambda ev: eid in notifications(ev))
        assert reader.until(lambda ev: unread_counts(ev)[-1:] == [1])
        with on_worker(site.server, one):  # the page, its form post and its answer: on one
            token = csrf(page, site.url + "/notifications/")
            read = page.post(f"{site.url}/notifications/{nid}/read", data={"csrf_token": token},
                             allow_redirects=False)
            assert read.status_code == 302
        events = reader.until(lambda ev: unread_counts(ev)[-1:] == [0])
        assert unread_counts(events) == [0, 1, 0] and notifications(events) == [eid]
        with site.app.app_context():
            assert inbox.unread_count(uid) == 0
    finally:
        sock.close()


def test_an_sse_reconnect_landing_on_the_other_worker_replays_each_missed_once(site):
    one, two = site.server.worker_pids()
    uid = site.user("hopper@example.com", PASSWORD)
    page = browser(site, "hopper@example.com")
    sock, reader = stream_on(site, one, page)
    _, seen = store(site, uid, "seen on one")
    reader.until(lambda ev: seen in notifications(ev))
    sock.close()
    missed = [store(site, uid, f"missed {i}")[1] for i in range(3)]
    sock, reader = stream_on(site, two, page, headers={"Last-Event-ID": seen})
    try:
        assert notifications(reader.events) == missed
        _, live = store(site, uid, "live on two")
        events = reader.until(lambda ev: live in notifications(ev))
        assert notifications(events) == [*missed, live]
    finally:
        sock.close()


def test_logging_out_on_one_worker_ends_that_sessions_stream_on_the_other(site):
    one, two = site.server.worker_pids()
    uid = site.user("leaver@example.com", PASSWORD)
    with on_worker(site.server, two):
        leaving = browser(site, "leaver@example.com")
        staying = browser(site, "leaver@example.com")
    sock, reader = stream_on(site, two, leaving)
    other_sock, other = stream_on(site, one, staying)
    try:
        with on_worker(site.server, one):
            token = csrf(leaving, site.url + "/dashboard")
            out = leaving.post(site.url + "/auth/logout", data={"csrf_token": token},
                               allow_redirects=False)
            assert out.status_code == 302
        assert ended(reader)
        _, eid = store(site, uid, "still live")  # the other session's stream, on one, stays
        other.until(lambda ev: eid in notifications(ev))
    finally:
        sock.close()
        other_sock.close()


def ws_on(site, pid, key, last_event_id=None):
    query = f"api_key={key}" + (f"&last_event_id={last_event_id}" if last_event_id else "")
    with on_worker(site.server, pid):
        ws = websocket.create_connection(f"ws://127.0.0.1:{site.server.port}/ws?{query}",
                                         timeout=15)
        opening = ws_until(ws, lambda m: m["event"] == "unread")
    assert holder(site.server, ws.sock) == pid
    return ws, opening


def ws_until(ws, done):
    """Messages read until `done(message)`, that one included."""
    seen = []
    while not seen or not done(seen[-1]):
        seen.append(json.loads(ws.recv()))
    return seen


def ws_closed(ws):
    """True once the server ends the WebSocket; a read past the timeout fails the test."""
    ws.settimeout(15)
    try:
        while ws.recv():  # a security notice may come first; a close frame reads as ""
            pass
    except (websocket.WebSocketConnectionClosedException, ConnectionError):
        pass
    return True


def ws_ids(messages):
    return [m["id"] for m in messages if m["event"] == "notification"]


def test_a_websocket_reconnecting_to_the_other_worker_replays_each_missed_once(site):
    one, two = site.server.worker_pids()
    uid = site.user("roamer@example.com", PASSWORD)
    with site.app.app_context():
        key = accounts.create_api_key(db.session.get(accounts.User, uid), "bot")[1]
        db.session.remove()
    ws, first = ws_on(site, one, key)
    before = first[-1]["data"]  # the key's own security notice, say
    _, seen = store(site, uid, "seen on one")
    assert ws_ids(ws_until(ws, lambda m: m.get("id") == seen)) == [seen]
    ws.close()
    missed = [store(site, uid, f"missed {i}")[1] for i in range(3)]
    ws, opening = ws_on(site, two, key, last_event_id=seen)
    try:
        assert ws_ids(opening) == missed and opening[-1]["data"] == before + 4
        _, live = store(site, uid, "live on two")
        assert ws_ids(ws_until(ws, lambda m: m.get("id") == live)) == [live]
        with on_worker(site.server, one):  # read on one through the API
            read = requests.post(site.url + "/api/v1/notifications/read-all", timeout=10,
                                 headers={"X-API-Key": key})
            assert read.json()["updated"] == before + 5
        after = ws_until(ws, lambda m: m["event"] == "unread" and m["data"] == 0)
        # the live one's count, then what read-all did (for the pages), then 0
        assert [(m["event"], m["data"]) for m in after] == [
            ("unread", before + 5), ("changed", {"read_upto": f"{live}-{uid}"}), ("unread", 0)]
    finally:
        ws.close()


def test_revoking_a_key_on_one_worker_closes_its_websocket_on_the_other(site):
    one, two = site.server.worker_pids()
    uid = site.user("revoker@example.com", PASSWORD)
    with site.app.app_context():
        made = accounts.create_api_key(db.session.get(accounts.User, uid), "old")
        key_id, key = made[0].id, made[1]
        db.session.remove()
    ws, _ = ws_on(site, two, key)
    try:
        with on_worker(site.server, one):
            page = browser(site, "revoker@example.com")
            token = csrf(page, site.url + "/settings/api-keys")
            revoked = page.post(f"{site.url}/settings/api-keys/{key_id}/revoke",
                                data={"csrf_token": token}, allow_redirects=False)
            assert revoked.status_code == 302
        assert ws_closed(ws)
    finally:
        ws.shutdown()  # after the server's close, close() would leave the socket open
