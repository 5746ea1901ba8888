"""One Redis pub/sub connection per web process, fanned out in memory to every live stream.

The hub pattern-subscribes to every user channel and every tick channel once (PSUBSCRIBE
`tb:user:*`, `tb:ticks:*`) instead of subscribing per connected user: the subscription never
changes, so there is no race between a stream starting and its channel becoming live, and no
subscribe traffic when 10k browsers reconnect at once. The cost is that each web process sees
every user's messages and drops those of users it does not serve (a dict lookup);
docs/scaling.md says when to switch to per-user SUBSCRIBE.

Runs in a thread, which the gevent worker's monkey-patching turns into a greenlet. When the
pub/sub connection drops, every stream is ended so browsers reconnect with Last-Event-ID and
replay what the gap cost them. A stream is anything with `user_id`, `symbols`, `credential`,
`put()` and `close()`: a `Client` queue drained by its request's greenlet (/ws, the dev
server), or a `webapp.live.handoff.SocketStream` the hub writes to directly (SSE under
gunicorn). A `revoked` event on a user's channel (see webapp/accounts/sessions.py) closes
that user's streams whose `credential` it lists, and goes no further.
"""

import json
import logging
import threading

import redis

from webapp import keys
from webapp.core.outage import Outage

log = logging.getLogger(__name__)

REVOKED = "revoked"  # {"event": "revoked", "data": [credential, ...]}: a logout, a revoked key
PATTERNS = (keys.user_channel("*"), keys.ticks_channel("*"), keys.watch_channel("*"))
DEFAULT_READY_TIMEOUT = 5.0
DEFAULT_POLL = 10.0  # seconds between pub/sub health checks while idle
FAILURE_PAUSE_S = 1.0  # after an unexpected reader error; Redis outages back off (Outage)
DEFAULT_KEEPALIVE_S = 15.0
# The hub beats this many times per keep-alive period, and a stream sends a keep-alive on the
# BEATS_PER_KEEPALIVE-th beat with nothing written since: so never more than one period after
# its last write (its opening included), however the beats fall, and without a timer each.
BEATS_PER_KEEPALIVE = 2
_QUEUE_LOCK = threading.Lock()


class Message:
    """One published message; `cache` holds its rendered forms, shared by every stream."""

    __slots__ = ("id", "event", "data", "raw", "cache")

    def __init__(self, event, data, raw, id=None):
        self.id, self.event, self.data, self.raw, self.cache = id, event, data, raw, {}

    @classmethod
    def parse(cls, raw):
        try:
            body = json.loads(raw)
            return cls(body["event"], body.get("data"), raw, body.get("id"))
        except (ValueError, KeyError, TypeError):
            log.warning("dropped a malformed message: %.200s", raw)
            return None


KEEPALIVE = Message("keepalive", None, "")  # the hub's beat: idle streams send a keep-alive


class Client:
    """One live stream: a queue the hub fills and the stream's greenlet drains.

    Kept small (a 10k-stream process holds 10k of these): a list swapped under one shared
    lock instead of a deque each, and no timer per stream (the hub's beat wakes them).
    """

    __slots__ = ("user_id", "symbols", "credential", "pending", "wake", "closed")

    def __init__(self, user_id, symbols=(), credential=None):
        self.user_id, self.symbols = str(user_id), frozenset(symbols)
        self.credential = credential  # the session or API key that opened it
        self.pending = []
        self.wake = threading.Event()
        self.closed = False

    def put(self, message):
        with _QUEUE_LOCK:
            self.pending.append(message)
        self.wake.set()

    def close(self):
        self.closed = True
        self.wake.set()

    def next_batch(self):
        """Everything queued, waiting until there is something; [] once closed."""
        if not self.pending and not self.closed:
            self.wake.wait()
        self.wake.clear()  # cleared before draining, so a put after this wakes the next wait
        with _QUEUE_LOCK:
            out, self.pending = self.pending, []
        return out


class Hub:
    """The process's pub/sub reader and the index of local streams by user and symbol."""

    def __init__(self, url, name="tb-hub", keepalive=DEFAULT_KEEPALIVE_S):
        self.url, self.name, self.keepalive = url, name, keepalive
        self.beat_s = keepalive / BEATS_PER_KEEPALIVE
        self.by_user, self.by_symbol, self.clients = {}, {}, set()
        self.ready, self._stop = threading.Event(), threading.Event()
        # The indexes' lock is never held across anything that can yield: under gevent a
        # SocketStream detaches from inside the event loop, where waiting for it is an error
        # (BlockingSwitchOutError) that leaves the stream attached for good. Starting the
        # threads yields (Thread.is_alive() and start() switch under gevent): its own lock.
        self._lock, self._starting = threading.Lock(), threading.Lock()
        self._thread = self._beat_thread = self._conn = None
        # Stream set-up reads (replay, unread count) share one connection: a burst of
        # reconnecting browsers queues for it instead of opening hundreds.
        self.reader = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
            url, max_connections=1, timeout=10, decode_responses=True,
            client_name=f"{name}-reader", socket_connect_timeout=2, socket_timeout=5))

    def attach(self, client, timeout=DEFAULT_READY_TIMEOUT):
        """Index a stream; raises redis.ConnectionError when the pub/sub link is not up."""
        self._start()
        if not self.ready.wait(timeout):
            raise redis.ConnectionError("the live feed is not connected to Redis")
        with self._lock:
            self.clients.add(client)
            self.by_user.setdefault(client.user_id, set()).add(client)
            for symbol in client.symbols:
                self.by_symbol.setdefault(symbol, set()).add(client)
        return client

    def detach(self, client):
        with self._lock:
            self.clients.discard(client)
            _remove(self.by_user, client.user_id, client)
            for symbol in client.symbols:
                _remove(self.by_symbol, symbol, client)

    def _rewatch_user(self, user_id, raw):
        """The user's alerts changed: their open streams follow these symbols' ticks."""
        try:
            symbols = json.loads(raw)
        except ValueError:
            symbols = None
        if not isinstance(symbols, list):
            log.warning("dropped a malformed watch message: %.200s", raw)
            return
        for client in tuple(self.by_user.get(user_id, ())):
            self.rewatch(client, symbols)

    def rewatch(self, client, symbols):
        """Send an open stream the ticks of these symbols from now on (a new alert's, say)."""
        symbols = frozenset(s for s in symbols if isinstance(s, str))
        with self._lock:
            if client not in self.clients:
                return
            for symbol in client.symbols - symbols:
                _remove(self.by_symbol, symbol, client)
            for symbol in symbols - client.symbols:
                self.by_symbol.setdefault(symbol, set()).add(client)
            client.symbols = symbols

    def _start(self):
        with self._starting:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
                self._beat_thread = threading.Thread(target=self._beat, daemon=True,
                                                     name=f"{self.name}-beat")
                self._beat_thread.start()

    def _beat(self):
        """Every `beat_s` s, one wake-up for all streams: cheaper than a timer per stream."""
        while not self._stop.wait(self.beat_s):
            self.beat()

    def beat(self):
        for client in tuple(self.clients):
            client.put(KEEPALIVE)

    def stop(self):
        """End the reader and every stream (tests, shutdown)."""
        self._stop.set()
        self._hang_up()
        for thread in (self._thread, self._beat_thread):
            if thread is not None:
                thread.join(5)
        self._drop_all()
        self.reader.close()

    def _run(self):
        outage = Outage("web-live-feed")
        while not self._stop.is_set():
            wait = 0
            try:
                self._listen(outage)
            except (redis.RedisError, OSError) as exc:
                if not self._stop.is_set():
                    wait = outage.failed(exc)  # one line when it goes, one when it is back
            except Exception:  # stop() pulls the socket away mid-read: not worth a trace
                if not self._stop.is_set():
                    log.exception("live feed reader failed")
                wait = FAILURE_PAUSE_S
            self.ready.clear()
            self._hang_up()
            self._drop_all()
            self._stop.wait(wait)

    def _listen(self, outage):
        conn = redis.Redis.from_url(self.url, decode_responses=True, client_name=self.name,
                                    socket_connect_timeout=2, socket_keepalive=True,
                                    health_check_interval=30)
        pubsub = self._conn = conn.pubsub()
        try:
            pubsub.psubscribe(*PATTERNS)
            confirmed = 0
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=DEFAULT_POLL)
                if message is None:
                    continue
                if message["type"] == "psubscribe":
                    confirmed += 1
                    if confirmed == len(PATTERNS):
                        self.ready.set()
                        outage.recovered()
                    continue
                self.dispatch(message["channel"], message["data"])
        finally:
            pubsub.close()
            conn.close()

    def _hang_up(self):
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.connection and conn.connection.disconnect()
            except (OSError, AttributeError):
                pass

    def dispatch(self, channel, raw):
        """Hand one published message to the local streams it concerns."""
        if channel.startswith(keys.USER_CHANNEL_PREFIX):
            targets = self.by_user.get(channel[len(keys.USER_CHANNEL_PREFIX):])
            make = Message.parse
        elif channel.startswith(keys.TICKS_CHANNEL_PREFIX):
            targets = self.by_symbol.get(channel[len(keys.TICKS_CHANNEL_PREFIX):])
            make = _tick
        elif channel.startswith(keys.WATCH_CHANNEL_PREFIX):
            self._rewatch_user(channel[len(keys.WATCH_CHANNEL_PREFIX):], raw)
            return
        else:
            return
        message = make(raw) if targets else None
        if message is not None and message.event == REVOKED:
            ended = message.data if isinstance(message.data, list) else ()
            for client in tuple(targets):
                if client.credential in ended:
                    client.close()
        elif message is not None:
            for client in tuple(targets):
                client.put(message)

    def _drop_all(self):
        with self._lock:
            clients = tuple(self.clients)
        for client in clients:
            client.close()


def _tick(raw):
    return Message("tick", None, raw)


def _remove(index, key, client):
    members = index.get(key)
    if members is not None:
        members.discard(client)
        if not members:
            del index[key]


def get_hub(app):
    """The app's hub, made on first use (it connects only when a stream attaches)."""
    hub = app.extensions.get("fanout")
    if hub is None:
        keepalive = float(app.config.get("STREAM_KEEPALIVE_S", DEFAULT_KEEPALIVE_S))
        hub = app.extensions.setdefault("fanout", Hub(app.config["REDIS_URL"],
                                                      keepalive=keepalive))
    return hub


def stream_count(app):
    hub = app.extensions.get("fanout")
    return len(hub.clients) if hub is not None else 0
