"""/ws keep-alives under gunicorn: an idle socket gets keep-alive messages and pings; a peer
that answers them stays, a peer that stops answering is closed and its stream let go."""

import json
import socket
import time

import pytest
import requests
import websocket
from websocket import ABNF

from tests.hub import poll
from webapp.accounts import service as accounts
from webapp.extensions import db
from webapp.inbox import service as inbox

PING_S = 1.5  # a pong is due within it: on a loaded machine 0.5 s closed a live socket


@pytest.fixture(scope="module")
def site(make_live_site):
    live = make_live_site("ws-keepalive", env={"STREAM_KEEPALIVE_S": "0.5",
                                               "WS_PING_INTERVAL_S": str(PING_S)})
    uid = live.user("idle@example.com", "correct horse")
    with live.app.app_context():
        key = accounts.create_api_key(db.session.get(accounts.User, uid), "ws")[1]
        db.session.remove()
    return live, key, uid


def connect(site, rcvbuf=None):
    live, key, _ = site
    options = ((socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf),) if rcvbuf else ()
    ws = websocket.create_connection(f"ws://127.0.0.1:{live.server.port}/ws?api_key={key}",
                                     timeout=10, sockopt=options)
    while json.loads(ws.recv())["event"] != "unread":  # the opening
        pass
    return ws


def streams_open(live):
    return requests.get(live.url + "/api/v1/health", timeout=5).json()["streams"]


def test_an_idle_websocket_that_answers_gets_keepalives_and_pings_and_stays(site):
    live = site[0]
    ws = connect(site)
    try:
        pings, keepalives = 0, []
        deadline = time.monotonic() + 20
        while pings < 4 or len(keepalives) < 4:  # several ping intervals: each answered
            assert time.monotonic() < deadline, f"{pings} pings, {len(keepalives)} keep-alives"
            opcode, frame = ws.recv_data_frame(True)  # websocket-client pongs a ping itself
            if opcode == ABNF.OPCODE_PING:
                pings += 1
            elif opcode == ABNF.OPCODE_TEXT:
                keepalives.append(json.loads(frame.data))
            else:
                pytest.fail(f"unexpected frame {opcode}: {frame.data!r}")
        assert keepalives == [{"event": "keepalive"}] * len(keepalives)  # nothing else: idle
        assert ws.connected and streams_open(live) == 1
    finally:
        ws.close()
    assert poll(lambda: streams_open(live) == 0, timeout=10)


def test_a_peer_that_stops_answering_pings_is_closed_and_its_stream_let_go(site):
    live = site[0]
    ws = connect(site)
    try:
        assert streams_open(live) == 1
        # no more reads from here: no pongs, as from a peer gone without a FIN
        assert poll(lambda: streams_open(live) == 0, timeout=15)
        ws.sock.settimeout(10)
        raw = b""
        while chunk := ws.sock.recv(65536):  # what the server sent, up to its close
            raw += chunk
        assert raw.endswith(b"\x88\x13\x03\xf0Ping/Pong timeout")  # close 1008: no pong
    finally:
        ws.shutdown()


def test_a_peer_that_stops_reading_under_a_flood_is_closed_and_its_stream_let_go(site):
    live = site[0]
    ws = connect(site, rcvbuf=4096)  # the server's writes block once the buffers are full
    uid = site[2]
    try:
        with live.app.app_context():  # ~10 MB for a peer that reads nothing
            for _ in range(4):
                inbox.store_many([{"user_id": uid, "type": "PRICE_ALERT", "title": "flood",
                                   "message": "x" * 2000} for _ in range(500)])
        assert poll(lambda: streams_open(live) == 0, timeout=15)
    finally:
        ws.shutdown()
