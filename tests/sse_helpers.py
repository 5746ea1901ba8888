"""Reading server-sent events in tests: from a test-client response or from a real socket."""

import socket
import time


def parse_block(block):
    """One SSE block (text between blank lines) -> dict with id/event/data, or a comment."""
    event = {"data": []}
    for line in block.split("\n"):
        if line.startswith(":"):
            return {"comment": line[1:].strip()}
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            event["data"].append(value)
        elif name in ("id", "event", "retry"):
            event[name] = value
    event["data"] = "\n".join(event["data"])
    return event


class EventReader:
    """Collects events from an iterator of byte chunks; `until` waits with a deadline."""

    def __init__(self, chunks):
        self.chunks = iter(chunks)
        self.buffer = ""
        self.events = []

    def _pull(self):
        chunk = next(self.chunks, None)
        if chunk is None:
            raise ConnectionError("the stream ended")
        self.buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in self.buffer:
            block, self.buffer = self.buffer.split("\n\n", 1)
            self.events.append(parse_block(block))

    def until(self, predicate, timeout=10.0):
        """Read until predicate(events) is true; return the events read so far."""
        deadline = time.monotonic() + timeout
        while not predicate(self.events):
            assert time.monotonic() < deadline, f"timed out; got {self.events[-5:]}"
            self._pull()
        return self.events

    def named(self, name):
        return [e for e in self.events if e.get("event") == name]


def socket_chunks(sock, heads=None):
    """Byte chunks of a raw HTTP/1.1 SSE response body (chunked or close-delimited)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += _recv(sock)
    head, buffer = buffer.split(b"\r\n\r\n", 1)
    if heads is not None:
        heads.append(head.decode("latin-1"))
    if b"transfer-encoding: chunked" in head.lower():
        yield from _dechunk(sock, buffer)
        return
    if buffer:
        yield buffer
    while True:
        try:
            yield _recv(sock)
        except ConnectionError:
            return


def _recv(sock):
    data = sock.recv(65536)
    if not data:
        raise ConnectionError("server closed the stream")
    return data


def _dechunk(sock, buffer):
    while True:
        while b"\r\n" not in buffer:
            buffer += _recv(sock)
        size_line, buffer = buffer.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            return
        while len(buffer) < size + 2:
            buffer += _recv(sock)
        yield buffer[:size]
        buffer = buffer[size + 2:]


def open_stream(port, cookie, path="/stream", headers=None, timeout=10.0, heads=None):
    """A raw socket GET of an SSE stream; returns (socket, EventReader)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n"
                  f"Accept: text/event-stream\r\n{extra}\r\n").encode())
    return sock, EventReader(socket_chunks(sock, heads))
