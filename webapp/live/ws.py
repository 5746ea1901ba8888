"""/ws: the events /stream sends, as JSON text `{"id", "event", "data"}`.

`notification` (the API's item, id = replay entry id), `unread` (the count, after every
change: a new notification, read, read all, delete), `changed` (what a read, delete or
acknowledgement did: docs/architecture.md), `tick` and `keepalive`. The HTML-only
`toast` is left out: a WebSocket client shows a notification however it likes.
"""

import contextlib
import json
import socket
import threading

from webapp.live.fanout import Message
from webapp.live.feed import Feed, message_item

KEEPALIVE_TEXT = '{"event":"keepalive"}'


def unread_text(count):
    return f'{{"event":"unread","data":{int(count)}}}'


def message_text(m):
    """A message's JSON text, made once per message for every stream."""
    text = m.cache.get("ws")
    if text is None:
        text = m.cache["ws"] = _text(m)
    return text


def _text(m):
    if m.event == "tick":
        return '{"event":"tick","data":' + m.raw + "}"
    if m.event == "notification":
        return json.dumps({"id": m.id, "event": "notification", "data": message_item(m)})
    if m.raw is not None:
        return m.raw  # passed on as published
    return json.dumps({"id": m.id, "event": m.event, "data": m.data})  # a replayed entry


class WsState:
    """One WebSocket's `Feed`, formatted as JSON texts."""

    __slots__ = ("feed",)

    def __init__(self, unread):
        self.feed = Feed(unread)

    def opening(self, replay):
        """The first texts: what was missed, oldest first, then the unread count."""
        return _texts(self.feed.opening(replay))

    def texts(self, batch):
        """Texts for live messages, and a keep-alive when the hub's beats say it is idle."""
        events = self.feed.live(batch)
        return _texts(events) if events else []


def _texts(events):
    out = []
    for name, _, payload in events:
        if payload.__class__ is Message:
            if name == payload.event:  # not a notification's toast
                out.append(payload.cache.get("ws") or message_text(payload))
        elif payload is None:
            out.append(KEEPALIVE_TEXT)
        else:
            out.append(unread_text(payload))
    return out


class WholeSends:
    """The socket under a simple-websocket connection, writing each frame whole, in time.

    simple-websocket 1.1 writes with `socket.send` and ignores a short write, so a reader
    that fell behind got frames cut short (miguelgrinberg/simple-websocket#45, fixed after
    1.1.0). `sendall` goes on until all is written, and the lock keeps a ping from the
    connection's own reader from landing inside a frame meanwhile. A peer that takes nothing
    for `timeout` seconds is given up (TimeoutError): a blocked write would hold its stream,
    and the hub would queue its messages, for as long as TCP keeps the connection.
    """

    def __init__(self, sock, timeout=None):
        self._sock, self._lock, self.timeout = sock, threading.Lock(), timeout
        self.given_up = False

    def send(self, data):
        with self._lock:
            if self.given_up:
                raise TimeoutError("the WebSocket peer stopped reading")
            before = self._sock.gettimeout()
            self._sock.settimeout(self.timeout)
            try:
                self._sock.sendall(data)
            except TimeoutError:
                self.given_up = True
                with contextlib.suppress(OSError):  # its reader sees the end and stops
                    self._sock.shutdown(socket.SHUT_RDWR)
                raise
            finally:
                self._sock.settimeout(before)
        return len(data)

    def __getattr__(self, name):  # recv, fileno, close: the socket's own
        return getattr(self._sock, name)
