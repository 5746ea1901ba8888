"""A fake Binance market-stream server on loopback, for tests, benchmarks and `make demo`.

It speaks the combined-stream format (`/stream?streams=a/b`, events wrapped as
`{"stream", "data"}`), answers SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS, sends pings,
and enforces Binance's limits (5 incoming messages a second, 1024 streams a connection),
recording every breach in `violations` so a test can assert a client never trips them.
On the same port it answers REST's `GET /api/v3/exchangeInfo` from `listing`.
"""

import argparse
import asyncio
import json
import signal
import socket
import struct
import threading
import time
from collections import deque
from http import HTTPStatus
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode

from devtools.fakefeed_protocol import (
    LISTING,
    combined,
    control_reply,
    exchange_info_payload,
    mini_ticker_payload,
    now_ms,
    server_shutdown_event,
    streams_from_path,
    trade_payloads,
)

DEFAULT_MAX_RATE = 5  # incoming messages a second, pings, pongs and control alike
DEFAULT_MAX_STREAMS = 1024
COUNTED = (Opcode.TEXT, Opcode.BINARY, Opcode.PING, Opcode.PONG)
POLICY_VIOLATION = 1008
EXCHANGE_INFO = "/api/v3/exchangeInfo"


class _Client:
    """One open connection: its streams and the times of its recent incoming frames."""

    def __init__(self, cid, ws, streams):
        self.id = cid
        self.ws = ws
        self.streams = set(streams)
        self.recent = deque()
        self.violated = False


class _CountingConnection(ServerConnection):
    """Counts every incoming frame the way Binance's rate limit does."""

    feed = None  # set per server by FakeFeed

    def process_event(self, event):
        super().process_event(event)
        if self.request is not None and getattr(event, "opcode", None) in COUNTED:
            self.feed._on_frame(self, event.opcode)


class FakeFeed:
    """Start with `start()` (a background thread) or as a context manager."""

    def __init__(self, port=0, host="127.0.0.1", ping_interval=20.0, ping_timeout=60.0,
                 max_rate=DEFAULT_MAX_RATE, max_streams=DEFAULT_MAX_STREAMS, demo=False):
        self.host, self.port = host, port
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self.max_rate, self.max_streams = max_rate, max_streams
        self.demo = demo
        self.violations = []  # (client id, reason)
        self.control_log = []  # (client id, parsed message) for every control message
        self.pongs = self.pings = 0  # frames of each kind clients sent
        self.last_sent = 0.0
        self.connections_total = 0
        self.refused_total = 0
        self.flapped_total = 0
        self._clients = {}
        self._refuse = 0  # handshakes to refuse; -1 = until accept() is called
        self._refuse_status = HTTPStatus.SERVICE_UNAVAILABLE
        self._flap = 0  # handshakes to accept and drop at once; -1 = until accept() is called
        self._seq = 0  # client ids
        self._trade_id = 0
        self._tasks = set()  # strong references, so pending closes are not collected
        self.listing = dict(LISTING)  # exchangeInfo's symbols: {symbol: status}
        self.api_status, self.api_headers = HTTPStatus.OK, {}  # e.g. 429, {"Retry-After": "60"}
        self.api_requests = []  # the path and query of every exchangeInfo request
        self._changed = threading.Condition(threading.RLock())
        self._loop = None
        self._thread = None

    # -- lifecycle ------------------------------------------------------------------
    @property
    def url(self):
        return f"ws://{self.host}:{self.port}"

    @property
    def api_url(self):
        """BINANCE_API_URL for this feed: exchangeInfo is served on the same port."""
        return f"http://{self.host}:{self.port}"

    def start(self):
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="fakefeed",
                                        daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake feed did not start")
        return self

    def stop(self):
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(10)
            self._loop = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _run(self, ready):
        asyncio.run(self._main(ready))

    async def _main(self, ready):
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()

        def factory(*args, **kwargs):
            conn = _CountingConnection(*args, **kwargs)
            conn.feed = self
            return conn

        async with serve(self._handle, self.host, self.port, compression=None,
                         process_request=self._process_request, create_connection=factory,
                         ping_interval=self.ping_interval, ping_timeout=self.ping_timeout,
                         close_timeout=1) as server:
            self.port = server.sockets[0].getsockname()[1]
            tasks = []
            if self.demo:
                from devtools.fakefeed_demo import replay

                tasks.append(asyncio.create_task(replay(self)))
            ready.set()
            await self._stopped.wait()
            for task in tasks:
                task.cancel()
            self._drop_all(None)  # no closing handshakes: stopping should be quick

    # -- commands (any thread) ------------------------------------------------------
    def trade(self, symbol, price, qty=1.0, ts_ms=None):
        """One trade on both `@aggTrade` and `@trade`; returns how many connections got it."""
        return self._call(self._publish_trade, symbol.upper(), price, qty, ts_ms or now_ms())

    def trades(self, trades, ts_ms=None):
        """[(symbol, price)] sent back to back in one turn of the loop, so they reach a
        client's socket together (a market-wide burst); returns the frames sent."""
        ts = ts_ms or now_ms()
        return self._call(lambda: sum(self._publish_trade(symbol.upper(), price, 1.0, ts)
                                      for symbol, price in trades))

    def mini_ticker(self, symbol, close, volume, quote_volume=None, ts_ms=None):
        """One `@miniTicker` event (rolling 24 h volume)."""
        data = mini_ticker_payload(symbol.upper(), close, volume, quote_volume, ts_ms)
        return self._call(self.publish, f"{symbol.lower()}@miniTicker", data)

    def send_raw(self, message):
        """One frame as is to every connection (str: text, bytes: binary): garbled input."""
        return self._call(lambda: self._broadcast_raw(message))

    def send_frames(self, raw):
        """Bytes as they are on every connection: hand-built frames (fragments, a cut one)."""
        return self._call(lambda: sum(c.ws.transport.write(raw) is None
                                      for c in self._clients.values()))

    def drop_all(self, code=None, reset=False):
        """Cut every connection: abruptly (as a network failure) or with a close code.

        Abrupt drops close the socket; with `reset` they send a TCP reset instead.
        """
        return self._call(self._drop_all, code, reset)

    def flap(self, times=None):
        """Accept the next `times` handshakes and drop each at once (None: until `accept()`)."""
        with self._changed:
            self._flap = -1 if times is None else times

    def refuse(self, times=None, status=HTTPStatus.SERVICE_UNAVAILABLE):
        """Refuse the next `times` handshakes with an HTTP error (None: until `accept()`)."""
        with self._changed:
            self._refuse = -1 if times is None else times
            self._refuse_status = status

    def accept(self):
        with self._changed:
            self._refuse = self._flap = 0

    def stall(self):
        """Every open connection goes quiet with its TCP kept open: sent nothing more (but
        `send_raw`), its frames left unread, so no ping is answered (a path that died without
        a FIN). Start the feed with ping_interval=None, or its own pings still go out."""
        return self._call(self._stall)

    def server_shutdown(self, close_after=None):
        """Send `serverShutdown` to every connection; close them `close_after` s later."""
        return self._call(self._server_shutdown, close_after)

    # -- observations (any thread) --------------------------------------------------
    @property
    def connection_count(self):
        with self._changed:
            return len(self._clients)

    def subscriptions(self):
        """The union of the streams of every open connection."""
        with self._changed:
            return set().union(*(c.streams for c in self._clients.values()))

    def client_streams(self):
        with self._changed:
            return [set(c.streams) for c in self._clients.values()]

    def wait(self, predicate, timeout=5.0):
        """Wait until predicate(feed) holds; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    def wait_for_subscription(self, stream, timeout=5.0):
        return self.wait(lambda f: stream in f.subscriptions(), timeout)

    def wait_for_unsubscription(self, stream, timeout=5.0):
        return self.wait(lambda f: stream not in f.subscriptions(), timeout)

    def wait_for_connections(self, total, timeout=5.0):
        """Wait until `total` handshakes have been accepted since start."""
        return self.wait(lambda f: f.connections_total >= total, timeout)

    # -- inside the loop ------------------------------------------------------------
    def _call(self, func, *args):
        async def run():
            return func(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def _process_request(self, connection, request):
        if urlsplit(request.path).path == EXCHANGE_INFO:
            return self._exchange_info(connection, request)
        with self._changed:
            if self._refuse:
                self._refuse -= 1 if self._refuse > 0 else 0
                self.refused_total += 1
                self._changed.notify_all()
                return connection.respond(self._refuse_status, "refused by the fake feed\n")
        streams, error = streams_from_path(request.path)
        if error is None and len(streams) > self.max_streams:
            error = f"too many streams: {len(streams)} > {self.max_streams}"
            self._violation(None, error)
        if error:
            return connection.respond(HTTPStatus.BAD_REQUEST, error + "\n")
        return None

    def _exchange_info(self, connection, request):
        """A plain HTTP answer instead of a handshake: the listing, or the error set."""
        with self._changed:
            self.api_requests.append(request.path)
            status, headers, listing = self.api_status, dict(self.api_headers), dict(self.listing)
            self._changed.notify_all()
        body = (exchange_info_payload(listing, request.path) if status == HTTPStatus.OK
                else {"code": -1003, "msg": f"fake feed answers {status}"})
        response = connection.respond(status, json.dumps(body))
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        for name, value in headers.items():
            response.headers[name] = value
        return response

    async def _handle(self, ws):
        streams, _ = streams_from_path(ws.request.path)
        with self._changed:
            self._seq += 1
            client = _Client(self._seq, ws, streams)
            self._clients[client.id] = client
            self.connections_total += 1
            ws.client = client
            flap, self._flap = self._flap, self._flap - (self._flap > 0)
            self.flapped_total += bool(flap)
            self._changed.notify_all()
        if flap:
            self._abort(ws, reset=False)
        try:
            async for raw in ws:
                await ws.send(json.dumps(self._control(client, raw)))
        except ConnectionClosed:
            pass
        finally:
            with self._changed:
                self._clients.pop(client.id, None)
                self._changed.notify_all()

    def _on_frame(self, ws, opcode):
        client = getattr(ws, "client", None)
        if client is None:
            return
        if opcode in (Opcode.PONG, Opcode.PING):
            with self._changed:
                if opcode is Opcode.PONG:
                    self.pongs += 1
                else:
                    self.pings += 1
                self._changed.notify_all()
        now = time.monotonic()
        client.recent.append(now)
        while client.recent and client.recent[0] <= now - 1.0:
            client.recent.popleft()
        if len(client.recent) > self.max_rate and not client.violated:
            client.violated = True
            self._violation(client.id, f"{len(client.recent)} messages in 1 s")
            self._close_later(ws, POLICY_VIOLATION, "Too many messages")

    def _violation(self, cid, reason):
        with self._changed:
            self.violations.append((cid, reason))
            self._changed.notify_all()

    def _control(self, client, raw):
        with self._changed:
            reply, msg, over_cap = control_reply(client.streams, raw, self.max_streams)
            if msg is not None:
                self.control_log.append((client.id, msg))
            if over_cap:
                self._violation(client.id, "too many streams")
            self._changed.notify_all()
        return reply

    def publish(self, stream, data):
        """Send one event to every connection subscribed to `stream` (loop thread only)."""
        message = combined(stream, data)
        targets = [c.ws for c in list(self._clients.values()) if stream in c.streams]
        self.last_sent = time.perf_counter()  # for benchmarks: the moment it leaves
        broadcast(targets, message)
        return len(targets)

    def _broadcast_raw(self, message):
        targets = [c.ws for c in self._clients.values()]
        broadcast(targets, message)
        return len(targets)

    def _publish_trade(self, symbol, price, qty, ts):
        self._trade_id += 1
        agg, trade = trade_payloads(symbol, price, qty, ts, self._trade_id)
        low = symbol.lower()
        return self.publish(f"{low}@aggTrade", agg) + self.publish(f"{low}@trade", trade)

    def _close_later(self, ws, code, reason, delay=0.0):
        def close():
            task = self._loop.create_task(ws.close(code, reason))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._loop.call_later(delay, close)

    def _drop_all(self, code, reset=False):
        clients = list(self._clients.values())
        for client in clients:
            if code is None:
                self._abort(client.ws, reset)
            else:
                self._close_later(client.ws, code, "dropped by the fake feed")
        return len(clients)

    @staticmethod
    def _abort(ws, reset):
        if reset:  # linger 0: close() sends RST, not FIN
            sock = ws.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        ws.transport.abort()

    def _stall(self):
        clients = list(self._clients.values())
        for client in clients:
            client.ws.transport.pause_reading()
            client.streams.clear()  # publish() finds it in no stream
        return len(clients)

    def _server_shutdown(self, close_after):
        clients = list(self._clients.values())
        broadcast([c.ws for c in clients], server_shutdown_event())
        if close_after is not None:
            for client in clients:
                self._close_later(client.ws, 1001, "server shutdown", close_after)
        return len(clients)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Fake Binance market streams on loopback.")
    parser.add_argument("--port", type=int, default=9443)
    parser.add_argument("--demo", action="store_true", help="replay a random walk of prices")
    parser.add_argument("--ping-interval", type=float, default=20.0)
    args = parser.parse_args(argv)
    feed = FakeFeed(port=args.port, ping_interval=args.ping_interval, demo=args.demo).start()
    print(f"fake Binance feed on {feed.url}{' (demo prices)' if args.demo else ''}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    feed.stop()


if __name__ == "__main__":
    main()
