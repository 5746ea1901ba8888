"""The live feed served by gunicorn's gevent worker: shared pub/sub, cleanup, /ws, Redis loss."""

import json
import socket
import subprocess
import sys
import time
from urllib.parse import quote

import pytest
import redis
import requests
import websocket

from devtools import redisd
from tests.hub import poll
from tests.live_server import ROOT, cookie_header, login, serve
from tests.sse_helpers import open_stream
from webapp.accounts import service as accounts
from webapp.core.headers import HEADERS
from webapp.extensions import db
from webapp.inbox import service as inbox

USERS = 4
STREAMS_PER_USER = 50
PASSWORD = "correct horse"


SETTINGS = {"env": {"STREAM_KEEPALIVE_S": "60"}, "appendonly": True}


def with_users(live):
    """The site's users, logged in, and an API key for the first."""
    with live.app.app_context():
        users = [accounts.create_user(f"u{i}@example.com", PASSWORD) for i in range(USERS)]
        uids = [u.id for u in users]
        key = accounts.create_api_key(users[0], "ws")[1]
        db.session.remove()
    cookies = [cookie_header(login(live.url, f"u{i}@example.com", PASSWORD))
               for i in range(USERS)]
    return {"app": live.app, "server": live.server, "redis": live.redis, "uids": uids,
            "key": key, "cookies": cookies}


@pytest.fixture(scope="module")
def site(make_live_site):
    """A site for the tests that watch only their own streams and notifications."""
    return with_users(make_live_site(**SETTINGS))


@pytest.fixture
def own_site(tmp_path):
    """A site of the test's own: it counts every stream (another test's leftover would count)
    or stops its Redis."""
    with serve(tmp_path, **SETTINGS) as live:
        yield with_users(live)


def store(site, uid, title="ping"):
    with site["app"].app_context():
        return inbox.store({"user_id": uid, "type": "PRICE_ALERT", "title": title,
                            "message": "m"})


def streams_open(site):
    return requests.get(site["server"].url + "/api/v1/health", timeout=5).json()["streams"]


def web_connections(site):
    """Redis connections the web process holds (everything but the CLIENT LIST caller)."""
    with redis.Redis.from_url(site["redis"]["url"], decode_responses=True) as r:
        return [c for c in r.client_list() if c["cmd"] != "client|list"]


def has_unread(events):
    return any(e.get("event") == "unread" for e in events)


def test_200_streams_share_one_pubsub_connection_and_stay_isolated(own_site):
    opened = []
    for i in range(USERS):
        for _ in range(STREAMS_PER_USER):
            opened.append((i, *open_stream(own_site["server"].port, own_site["cookies"][i])))
    try:
        for _, _, reader in opened:
            reader.until(has_unread)
        assert streams_open(own_site) == USERS * STREAMS_PER_USER
        names = sorted(c["name"] for c in web_connections(own_site) if c["name"])
        assert names.count("tb-hub") == 1
        subscribers = [c for c in web_connections(own_site) if int(c.get("sub", 0)) > 0]
        assert len(subscribers) == 1  # each user's channel and watch channel, once
        assert int(subscribers[0]["sub"]) == 2 * USERS
        assert all(int(c.get("psub", 0)) == 0 for c in web_connections(own_site))
        sent = [store(own_site, uid, f"for user {i}")[1] for i, uid in enumerate(own_site["uids"])]
        for i, _, reader in opened:
            events = reader.until(lambda ev: any(e.get("event") == "notification" for e in ev))
            notes = [e for e in events if e.get("event") == "notification"]
            assert [e["id"] for e in notes] == [sent[i]]
            assert f"for user {i}<" in notes[0]["data"]
    finally:
        for _, sock, _ in opened:
            sock.close()
    assert poll(lambda: streams_open(own_site) == 0)


def test_a_client_that_goes_away_is_cleaned_up_at_once(own_site):
    # Keep-alives are 60 s apart here: only noticing the closed socket can be this quick.
    opened = [open_stream(own_site["server"].port, own_site["cookies"][1]) for _ in range(10)]
    for _, reader in opened:
        reader.until(has_unread)
    assert streams_open(own_site) == 10
    for sock, _ in opened:
        sock.close()
    assert poll(lambda: streams_open(own_site) == 0, timeout=5)


# The gevent worker's event loop runs SocketStream.close when a client's socket turns readable;
# here it runs at the next switch, which the second attach makes (Thread.is_alive() yields).
DETACH_IN_THE_LOOP = """
from gevent import monkey
monkey.patch_all()
import socket, sys
import gevent
from webapp.live import fanout
from webapp.live import handoff

hub = fanout.Hub({"REDIS_URL": sys.argv[1]})
server_end, client_end = socket.socketpair()
leaving = hub.attach(handoff.SocketStream(hub, 1, (), server_end))
gevent.get_hub().loop.run_callback(leaving.close)
staying = hub.attach(fanout.Client(2))
gevent.sleep(0.1)
print(sorted(c.user_id for c in hub.clients))
hub.stop()
"""


def test_a_stream_the_event_loop_closes_while_another_attaches_is_released(redis_url):
    done = subprocess.run([sys.executable, "-c", DETACH_IN_THE_LOOP, redis_url], cwd=ROOT,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.stdout.splitlines()[:1] == ["['2']"], done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_head_answers_headers_only(own_site):
    response = requests.head(own_site["server"].url + "/stream", timeout=5,
                             headers={"Cookie": own_site["cookies"][0]})
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    assert streams_open(own_site) == 0


def test_stream_headers_on_the_wire(site):
    response = requests.get(site["server"].url + "/stream", stream=True, timeout=5,
                            headers={"Cookie": site["cookies"][0]})
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-store"  # a user's notifications
    assert response.headers["X-Accel-Buffering"] == "no"
    # written straight to the socket (webapp/live/handoff.py), past every after_request
    for name, value in HEADERS.items():
        assert response.headers[name] == value, name
    response.close()


def ws_url(site, query):
    return f"ws://127.0.0.1:{site['server'].port}/ws{query}"


def ws_until(ws, predicate, timeout=10.0):
    deadline, got = time.monotonic() + timeout, []
    ws.settimeout(timeout)
    while not predicate(got):
        assert time.monotonic() < deadline, f"timed out; got {got}"
        got.append(json.loads(ws.recv()))
    return got


@pytest.mark.parametrize("how", ["query", "header"])
def test_ws_carries_the_same_events_as_json(site, how):
    uid = site["uids"][0]
    query, headers = (f"?api_key={site['key']}", None) if how == "query" else (
        "", [f"X-API-Key: {site['key']}"])
    ws = websocket.create_connection(ws_url(site, query), header=headers, timeout=10)
    try:
        first = ws_until(ws, lambda got: got and got[-1]["event"] == "unread")
        assert isinstance(first[-1]["data"], int)
        nid, eid = store(site, uid, "over ws")
        got = ws_until(ws, lambda got: got and got[-1]["event"] == "notification")
        assert got[-1]["id"] == eid and got[-1]["data"]["id"] == nid
        assert got[-1]["data"]["title"] == "over ws" and got[-1]["data"]["status"] == "unread"
    finally:
        ws.close()


def test_ws_replays_from_last_event_id(site):
    uid = site["uids"][0]
    _, seen = store(site, uid, "seen")
    missed = [store(site, uid, f"missed {i}")[1] for i in range(3)]
    ws = websocket.create_connection(ws_url(site, f"?api_key={site['key']}&last_event_id={seen}"))
    try:
        got = ws_until(ws, lambda got: got and got[-1]["event"] == "unread")
        assert [m["id"] for m in got if m["event"] == "notification"] == missed
    finally:
        ws.close()


@pytest.mark.parametrize("query", ["", "?api_key=tb_wrong"])
def test_ws_without_a_good_key_is_refused(site, query):
    with pytest.raises(websocket.WebSocketBadStatusException) as exc:
        websocket.create_connection(ws_url(site, query), timeout=5)
    assert exc.value.status_code == 401


def test_ws_refuses_a_session_cookie_alone(site):
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(ws_url(site, ""), cookie=site["cookies"][0], timeout=5)


def test_streams_end_when_redis_goes_and_resume_with_replay_when_it_returns(own_site):
    uid, box = own_site["uids"][2], own_site["redis"]
    _, seen = store(own_site, uid, "before")
    sock, reader = open_stream(own_site["server"].port, own_site["cookies"][2])
    reader.until(has_unread)
    redisd.stop(box["process"])
    with pytest.raises(ConnectionError):  # the hub ends every stream so browsers reconnect
        reader.until(lambda ev: False)
    sock.close()
    box["process"], _ = redisd.start(box["dir"], appendonly=True)  # its socket: the same url
    _, missed = store(own_site, uid, "while away")
    sock, reader = open_stream(own_site["server"].port, own_site["cookies"][2],
                               headers={"Last-Event-ID": seen})
    try:
        events = reader.until(has_unread, timeout=15)
        assert [e["id"] for e in events if e.get("event") == "notification"] == [missed]
    finally:
        sock.close()


def test_ws_set_up_while_redis_is_away_closes_with_try_again_later(own_site):
    """The handshake done, Redis does not answer the stream's set-up: the socket is closed
    with 1013 (Try Again Later), not written an HTTP 503 that garbles it (a drill's clients
    failed on "reserved bits", and gunicorn then read the socket as a request)."""
    box = own_site["redis"]
    redisd.stop(box["process"])
    try:
        ws = websocket.create_connection(ws_url(own_site, f"?api_key={own_site['key']}"),
                                         timeout=10)
        try:
            opcode, data = ws.recv_data(control_frame=True)
            assert opcode == websocket.ABNF.OPCODE_CLOSE
            assert int.from_bytes(data[:2], "big") == 1013, data
        finally:
            ws.shutdown()  # its close is done: close() would wait for one more
    finally:
        box["process"], _ = redisd.start(box["dir"], appendonly=True)


def test_a_client_that_stops_reading_is_dropped_without_holding_up_others(own_site):
    slow_uid, fast_uid = own_site["uids"][3], own_site["uids"][1]
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", own_site["server"].port))
    slow.sendall(f"GET /stream HTTP/1.1\r\nHost: x\r\nCookie: {own_site['cookies'][3]}\r\n\r\n"
                 .encode())
    fast_sock, fast = open_stream(own_site["server"].port, own_site["cookies"][1])
    fast.until(has_unread)
    assert poll(lambda: streams_open(own_site) == 2)
    with own_site["app"].app_context():  # ~10 MB for a client that reads nothing
        for _ in range(4):
            inbox.store_many([{"user_id": slow_uid, "type": "PRICE_ALERT", "title": "flood",
                               "message": "x" * 2000} for _ in range(500)])
    _, after = store(own_site, fast_uid, "still on time")
    fast.until(lambda ev: any(e.get("id") == after for e in ev))
    assert poll(lambda: streams_open(own_site) == 1)  # the slow one was let go
    slow.close()
    fast_sock.close()


def test_a_long_replay_goes_out_whole_and_in_order(site):
    uid = site["uids"][2]
    _, seen = store(site, uid, "seen")
    with site["app"].app_context():
        missed = [eid for _, eid in inbox.store_many(
            [{"user_id": uid, "type": "PRICE_ALERT", "title": f"missed {i}", "message": "m" * 500}
             for i in range(1000)])]
    sock, reader = open_stream(site["server"].port, site["cookies"][2],
                               headers={"Last-Event-ID": seen})
    try:
        events = reader.until(has_unread, timeout=20)
        assert [e["id"] for e in events if e.get("event") == "notification"] == missed
        _, live = store(site, uid, "live")
        reader.until(lambda ev: any(e.get("id") == live for e in ev))
    finally:
        sock.close()


def ws_connect(site, last_event_id=None):
    query = f"?api_key={site['key']}"
    if last_event_id is not None:
        query += f"&last_event_id={quote(last_event_id)}"
    return websocket.create_connection(ws_url(site, query), timeout=10)


def test_ws_replay_carries_the_read_state_of_now(site):
    uid = site["uids"][0]
    _, seen = store(site, uid, "seen")
    read, _ = store(site, uid, "read elsewhere")
    unread, _ = store(site, uid, "still unread")
    with site["app"].app_context():
        inbox.mark_read(uid, read)
    ws = ws_connect(site, seen)
    try:
        got = ws_until(ws, lambda got: got and got[-1]["event"] == "unread")
        assert [(m["data"]["id"], m["data"]["status"]) for m in got[:-1]] == [
            (read, "read"), (unread, "unread")]
    finally:
        ws.close()


BAD_IDS = ["0-18446744073709551616", "99999999999999999999-0", "18446744073709551616",
           "18446744073709551615-18446744073709551615", "1" * 500, "-1", "", "x", "1-2-3",
           "\u0661-\u0660"]


@pytest.mark.parametrize("last", BAD_IDS)
def test_ws_treats_an_id_that_is_no_stream_id_as_none(site, last):
    store(site, site["uids"][0])
    ws = ws_connect(site, last)
    try:
        got = ws_until(ws, lambda got: got)
        assert got[0]["event"] == "unread"  # no replay, and no crash (close 1006)
    finally:
        ws.close()


def events_of_sse(events):
    """(event, unread count or notification id) of SSE events, as /ws names them."""
    out = []
    for e in events:
        if e.get("event") == "notification":
            out.append(("notification", e["id"]))
        elif e.get("event") == "unread":
            out.append(("unread", int(e["data"].split('data-count="')[1].split('"')[0])))
    return out


def events_of_ws(messages):
    return [(m["event"], m["id"] if m["event"] == "notification" else m["data"])
            for m in messages if m["event"] in ("notification", "unread")]


def test_ws_and_the_stream_send_the_same_events_for_every_change(site):
    uid = site["uids"][0]
    sock, reader = open_stream(site["server"].port, site["cookies"][0])
    ws = ws_connect(site)
    try:
        [(_, n)] = events_of_sse(reader.until(has_unread))
        opening = ws_until(ws, lambda got: got and got[-1]["event"] == "unread")
        first, first_eid = store(site, uid, "one")
        _, second_eid = store(site, uid, "two")
        with site["app"].app_context():
            inbox.mark_read(uid, first)
            inbox.delete(uid, f"{second_eid}-{uid}")
            _, third_eid = store(site, uid, "three")
            inbox.mark_all_read(uid)
        expected = [("unread", n), ("notification", first_eid), ("unread", n + 1),
                    ("notification", second_eid), ("unread", n + 2), ("unread", n + 1),
                    ("unread", n), ("notification", third_eid), ("unread", n + 1), ("unread", 0)]
        counts = sum(name == "unread" for name, _ in expected)
        sse = reader.until(lambda ev: len(reader.named("unread")) == counts)
        later = ws_until(ws, lambda got: len(events_of_ws(got)) == len(expected) - 1)
        assert events_of_sse(sse) == expected
        assert events_of_ws(opening + later) == expected
    finally:
        ws.close()
        sock.close()
