"""Slow clients that keep reading: a small receive buffer, reads in bursts, far enough behind
that the server holds part of what it owes in its own backlog (SSE) or blocks in its writes
(WebSocket), yet within the allowed lag. They get every event whole, in order, none twice, and
stay connected. (The client that stops reading altogether and is dropped:
tests/test_stream_server.py.)"""

import json
import re
import socket
from pathlib import Path

import pytest
import requests
import websocket

from tests.hub import poll
from tests.live_server import cookie_header, login
from tests.sse_helpers import EventReader, socket_chunks
from webapp.accounts import service as accounts
from webapp.extensions import db
from webapp.inbox import service as inbox
from webapp.live.handoff import MAX_BACKLOG

PASSWORD = "correct horse"
BEHIND = 64 * 1024  # this much in the server's own backlog: many frames appended there
BODY = "m" * 1500  # a long message: a few KB of frames a notification (item, toast, count)


@pytest.fixture(scope="module")
def site(make_live_site):
    live = make_live_site("slow", env={"STREAM_KEEPALIVE_S": "60"})
    uid = live.user("slow@example.com", PASSWORD)
    return live, uid, cookie_header(login(live.url, "slow@example.com", PASSWORD))


class Counted:
    """A socket's SSE chunks, counting the bytes read."""

    def __init__(self, sock):
        self.sock, self.bytes = sock, 0

    def __iter__(self):
        for chunk in socket_chunks(self.sock):
            self.bytes += len(chunk)
            yield chunk


def stream(port, cookie, rcvbuf=None):
    """A stream on a raw socket (a small `rcvbuf`: a slow link); (socket, Counted, reader)."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(20)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /stream HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n".encode())
    counted = Counted(sock)
    return sock, counted, EventReader(counted)


def kernel_held(server_port, client_port):
    """Bytes the kernel holds between the server and this client: its send queue and ours."""
    held = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(f.split(":")[1], 16) for f in fields[1:3])
        tx_queue, rx_queue = (int(q, 16) for q in fields[4].split(":"))
        if (local, remote) == (server_port, client_port):
            held += tx_queue
        elif (local, remote) == (client_port, server_port):
            held += rx_queue
    return held


def notifications(events):
    return [e["id"] for e in events if e.get("event") == "notification"]


def unread_counts(events):
    return [int(re.search(r'data-count="(\d+)"', e["data"]).group(1))
            for e in events if e.get("event") == "unread"]


def has_unread(events):
    return bool(unread_counts(events))


def burst(live, uid, n, title):
    with live.app.app_context():
        return [eid for _, eid in inbox.store_many(
            [{"user_id": uid, "type": "PRICE_ALERT", "title": f"{title} {i}", "message": BODY}
             for i in range(n)])]


def upto(events, eid):
    """The events up to the notification `eid`, keep-alive comments left out."""
    kept = [e for e in events if "comment" not in e]
    return kept[:[e.get("id") for e in kept].index(eid) + 1]


def streams_open(live):
    return requests.get(live.url + "/api/v1/health", timeout=5).json()["streams"]


def test_a_slow_reader_within_the_allowed_lag_gets_every_event_once_in_order(site):
    live, uid, cookie = site
    port = live.server.port
    slow_sock, _, slow = stream(port, cookie, rcvbuf=4096)
    fast_sock, fast_read, fast = stream(port, cookie)  # the same user's events, read at once
    try:
        slow.until(has_unread)
        fast.until(has_unread)
        assert poll(lambda: streams_open(live) == 2)
        first, owed, held = [], 0, 0
        while owed - held < BEHIND:  # the kernel's buffers full, the server's backlog in use
            assert len(first) < 3000, "the kernel took everything: no backlog"
            before = fast_read.bytes
            first += burst(live, uid, 50, "first")
            last = first[-1]
            fast.until(lambda ev, last=last: last in notifications(ev))  # the hub wrote all
            owed += fast_read.bytes - before  # what the slow stream is owed, as good as
            held = kernel_held(port, slow_sock.getsockname()[1])
        assert owed - held < MAX_BACKLOG  # behind, but within the allowed lag
        assert streams_open(live) == 2
        half = len(first) // 2
        slow.until(lambda ev: len(notifications(ev)) >= half)  # a burst of reads, then none
        second = burst(live, uid, 100, "second")  # while still behind
        fast.until(lambda ev: second[-1] in notifications(ev))
        total = len(first) + len(second)
        events = slow.until(lambda ev: unread_counts(ev)[-1] == total, timeout=30)
        assert notifications(events) == first + second  # all, in order, none twice
        assert unread_counts(events) == list(range(total + 1))  # the opening's 0, then each
        _, live_id = inbox_store(live, uid)
        events = slow.until(lambda ev: live_id in notifications(ev))
        assert notifications(events) == [*first, *second, live_id]
        fast.until(lambda ev: live_id in notifications(ev))
        assert upto(events, live_id) == upto(fast.events, live_id)  # byte for byte the same
        assert streams_open(live) == 2  # never dropped
    finally:
        slow_sock.close()
        fast_sock.close()


def inbox_store(live, uid):
    with live.app.app_context():
        return inbox.store({"user_id": uid, "type": "PRICE_ALERT", "title": "caught up",
                            "message": "m"})


def test_a_slow_websocket_reader_gets_every_message_whole_once_in_order(site):
    live, _, _ = site
    uid = live.user("slow-ws@example.com", PASSWORD)
    with live.app.app_context():
        key = accounts.create_api_key(db.session.get(accounts.User, uid), "ws")[1]
        db.session.remove()
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{live.server.port}/ws?api_key={key}", timeout=20,
        sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    try:
        while json.loads(ws.recv())["event"] != "unread":  # the opening
            pass
        sent = burst(live, uid, 2000, "ws")  # ~3.5 MB: more than the kernel buffers hold
        got, counts = [], []
        while len(got) < len(sent) or counts[-1] != len(sent) + 1:
            message = json.loads(ws.recv())  # a frame cut short fails to parse, or worse
            if message["event"] == "notification":
                assert message["data"]["message"] == BODY
                got.append(message["id"])
            elif message["event"] == "unread":
                counts.append(message["data"])
        assert got == sent  # all, in order, none twice
        assert counts == list(range(2, len(sent) + 2))  # after the key's security notice
    finally:
        ws.close()
