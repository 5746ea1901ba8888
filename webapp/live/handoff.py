"""Under gunicorn's gevent worker a stream leaves its request greenlet: the hub writes to it.

A greenlet parked in a response generator keeps ~20 KB resident (its stack pages, the
server's parser and environ). Once the response head and the replay are written, nothing
about the request is needed again, so the socket is duplicated, the request greenlet ends
(gunicorn closes its copy of the descriptor), and the hub writes each event straight to the
socket without a wake-up or a switch. The body is delimited by the connection closing
(`Connection: close`), which every EventSource accepts.

Writes never block the hub: what the kernel does not take waits in `backlog` and goes out
when the socket turns writable; a client that falls MAX_BACKLOG behind is disconnected (it
reconnects and replays). The socket turning readable means the client left: closed at once.
"""

import _socket  # the C socket type: gevent does not patch it, so a send never yields
import os

from flask import Response

from webapp.core import headers

HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
        b"Cache-Control: no-store\r\nX-Accel-Buffering: no\r\n" + headers.raw()
        + b"Connection: close\r\n\r\n")
MAX_BACKLOG = 1 << 20
READ, WRITE = 1, 2


def server_socket(environ):
    """The client socket when the server lets it go (gunicorn + gevent), else None."""
    try:
        from gevent.monkey import is_module_patched
    except ImportError:  # pragma: no cover - gevent is a dependency
        return None
    sock = environ.get("gunicorn.socket")
    return sock if sock is not None and is_module_patched("socket") else None


class HandedOff(Response):
    """What the view returns once the hub owns the socket: the server just lets go."""

    def __call__(self, environ, start_response):
        raise StopIteration  # gunicorn's async workers close their end and move on


class SocketStream:
    """A live stream written by the hub; same interface as fanout.Client for the hub."""

    transport = "sse"

    __slots__ = ("user_id", "symbols", "credential", "hub", "state", "sock", "backlog",
                 "pending", "limit", "loop", "reader", "writer", "closed")

    def __init__(self, hub, user_id, symbols, server_sock, credential=None):
        from gevent import get_hub

        self.user_id, self.symbols, self.hub = str(user_id), frozenset(symbols), hub
        self.credential = credential  # the session that opened it (fanout's `revoked`)
        self.state, self.backlog, self.pending, self.closed = None, b"", [], False
        self.limit = MAX_BACKLOG
        self.sock = _socket.socket(fileno=os.dup(server_sock.fileno()))
        self.sock.setblocking(False)
        self.loop = get_hub().loop
        self.reader, self.writer = self.loop.io(self.sock.fileno(), READ), None

    def start(self, state, opening):
        """Write the head and opening bytes, then what arrived meanwhile; go live."""
        self.state = state
        self.limit = MAX_BACKLOG + len(opening)  # a long replay may sit in the backlog
        self._write(HEAD + opening)
        queued, self.pending = self.pending, None
        if queued:
            self.put_many(queued)
        if not self.closed:
            self.reader.start(self.close)

    def put(self, message):
        if self.closed:
            return
        if self.pending is not None:  # the opening is not written yet: keep order
            self.pending.append(message)
            return
        data = self.state.frames((message,))
        if data:
            self._write(data)

    def put_many(self, messages):
        data = self.state.frames(messages)
        if data:
            self._write(data)

    def _write(self, data):
        if self.closed:
            return
        if self.backlog:
            self.backlog += data
            if len(self.backlog) > self.limit:
                self.close()
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return
        if sent < len(data):
            self.backlog = data[sent:]
            self.writer = self.loop.io(self.sock.fileno(), WRITE)
            self.writer.start(self._flush)

    def _flush(self):
        try:
            sent = self.sock.send(self.backlog)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        self.backlog = self.backlog[sent:]
        if not self.backlog:
            self.writer.stop()
            self.writer.close()
            self.writer = None

    def close(self):
        # Often called by the event loop itself (the reader's callback), where nothing may
        # block: Hub.detach's lock is never held across a switch, so it is always free here.
        if self.closed:
            return
        self.closed = True
        try:
            self.hub.detach(self)
        finally:  # whatever detach does, the socket and its watchers go
            for watcher in (self.reader, self.writer):
                if watcher is not None:
                    watcher.stop()
                    watcher.close()
            self.reader = self.writer = None
            self.sock.close()

