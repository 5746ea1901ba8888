"""One Redis pub/sub link per web process, fanned out in memory to every live stream.

The hub subscribes only to what its streams need (webapp/live/channels.py): each served
user's channel and watch channel, each watched symbol's tick channel, counted per stream, so a
message reaches only the processes serving its user and a user with no page open costs a
publish nothing. On a Redis Cluster the channels are sharded (SSUBSCRIBE through redis-py's
ClusterPubSub, one connection per node holding one of them), so a message also stays on the
node that owns its slot. A stream reads its replay only once its channels are live, so nothing
published between the replay and the live feed is lost (docs/scaling.md, "Web").

The reader runs in a thread, which the gevent worker's monkey-patching turns into a greenlet,
and alone talks on the link: streams only count their channels and wake it through a pipe,
because a stream is often closed inside the event loop where nothing may block. It sends what
piled up meanwhile as few commands with many channels each. When the link drops, every stream
is ended so browsers reconnect with Last-Event-ID and replay what the gap cost them; the next
link subscribes what the streams still open need. A stream is anything with `user_id`,
`symbols`, `credential`, `closed`, `put()` and `close()`: a `Client` queue drained by its
request's greenlet (/ws, the dev server), or a `webapp.live.handoff.SocketStream` the hub
writes to directly (SSE under gunicorn). A `revoked` event on a user's channel (see
webapp/accounts/sessions.py) closes that user's streams whose `credential` it lists, and goes
no further.
"""

import json
import logging
import threading
import time

import redis

from webapp import keys
from webapp.core import jsontext, metrics
from webapp.core.outage import Outage
from webapp.extensions import data_redis
from webapp.live.channels import Subscriptions
from webapp.live.link import Link

log = logging.getLogger(__name__)

REVOKED = "revoked"  # {"event": "revoked", "data": [credential, ...]}: a logout, a revoked key
DEFAULT_READY_TIMEOUT = 5.0
FAILURE_PAUSE_S = 1.0  # after an unexpected reader error; Redis outages back off (Outage)
RETRY_FLOOR_S = 0.5  # tries at a link while Redis is away: at least this far apart
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
            body = jsontext.fast_loads(raw)
            if body is None:  # what orjson refuses or may misread
                body = json.loads(raw)
            data, id_ = body.get("data"), body.get("id")
            if (body["event"] == "notification" and isinstance(data, dict)
                    and "id" not in data and "user_id" in data):
                # The matcher publishes a notification as stored, its id left out (Lua
                # would copy the whole text once more to add it): added as the inbox does
                # when it reads an entry (webapp/inbox/service.py).
                data["id"] = f"{id_}-{data['user_id']}"
            return cls(body["event"], data, raw, id_)
        except (ValueError, KeyError, TypeError, AttributeError):  # AttributeError: not an object
            log.warning("dropped a malformed message: %.200s", raw)
            return None


KEEPALIVE = Message("keepalive", None, "")  # the hub's beat: idle streams send a keep-alive


class Client:
    """One live stream: a queue the hub fills and the stream's greenlet drains.

    Kept small (a 10k-stream process holds 10k of these): a list swapped under one shared
    lock instead of a deque each, and no timer per stream (the hub's beat wakes them).
    """

    __slots__ = ("user_id", "symbols", "credential", "transport", "pending", "wake", "closed")

    def __init__(self, user_id, symbols=(), credential=None, transport="sse"):
        self.user_id, self.symbols = str(user_id), frozenset(symbols)
        self.credential = credential  # the session or API key that opened it
        self.transport = transport  # sse | ws: the open-streams gauge's label
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

    def __init__(self, config, name="tb-hub", keepalive=DEFAULT_KEEPALIVE_S):
        self.config, self.name, self.keepalive = config, name, keepalive
        self.beat_s = keepalive / BEATS_PER_KEEPALIVE
        self.by_user, self.by_symbol, self.clients = {}, {}, set()
        self.subscriptions = Subscriptions()
        self._stop = threading.Event()
        self._wanted = threading.Event()  # a stream waits for a link: try again now
        # The indexes' lock is never held across anything that can yield: under gevent a
        # SocketStream detaches from inside the event loop, where waiting for it is an error
        # (BlockingSwitchOutError) that leaves the stream attached for good. Starting the
        # threads yields (Thread.is_alive() and start() switch under gevent): its own lock.
        self._lock, self._starting = threading.Lock(), threading.Lock()
        self._thread = self._beat_thread = self._link = None
        # Stream set-up reads (replay, unread count) share one connection (one a node on a
        # cluster): a burst of reconnecting browsers queues for it instead of opening hundreds.
        self.reader = data_redis(config, max_connections=1, client_name=f"{name}-reader")

    def attach(self, client, timeout=DEFAULT_READY_TIMEOUT):
        """Index a stream and wait until its channels are live on the pub/sub link.

        Raises redis.ConnectionError when they are not within `timeout` (Redis is away) or
        the link dropped meanwhile (the stream was ended); the caller detaches it.
        """
        self._start()
        with self._lock:
            self.clients.add(client)
            self.by_user.setdefault(client.user_id, set()).add(client)
            for symbol in client.symbols:
                self.by_symbol.setdefault(symbol, set()).add(client)
        metrics.stream_opened(client)
        waits = self.subscriptions.want(_channels(client.user_id, client.symbols))
        if self._link is None:  # Redis was away: it may be back (a failover done)
            self._wanted.set()
        deadline = time.monotonic() + timeout
        for event in waits:
            if not event.wait(max(0.0, deadline - time.monotonic())):
                raise redis.ConnectionError("the live feed is not connected to Redis")
        if client.closed or client not in self.clients:
            raise redis.ConnectionError("the live feed lost Redis while the stream started")
        return client

    def detach(self, client):
        """Unindex a stream (any greenlet, the event loop included: never blocks)."""
        with self._lock:
            if client not in self.clients:
                return
            self.clients.discard(client)
            _remove(self.by_user, client.user_id, client)
            for symbol in client.symbols:
                _remove(self.by_symbol, symbol, client)
        metrics.stream_closed(client)
        self.subscriptions.unwant(_channels(client.user_id, client.symbols))

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
            gone, new = client.symbols - symbols, symbols - client.symbols
            for symbol in gone:
                _remove(self.by_symbol, symbol, client)
            for symbol in new:
                self.by_symbol.setdefault(symbol, set()).add(client)
            client.symbols = symbols
        # ticks are state, not history: nobody waits for these to turn live
        self.subscriptions.want(keys.ticks_channel(s) for s in new)
        self.subscriptions.unwant(keys.ticks_channel(s) for s in gone)

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
        """End the reader and every stream, for good (tests, shutdown)."""
        self._stop.set()
        self._wanted.set()
        self.subscriptions.wake()
        self._hang_up()
        for thread in (self._thread, self._beat_thread):
            if thread is not None:
                thread.join(5)
        self._drop_all()
        self.reader.close()
        self.subscriptions.close()

    def _run(self):
        outage = Outage("web-live-feed")
        while not self._stop.is_set():
            wait = 0
            self._wanted.clear()
            try:
                self._listen(outage)
            except (redis.RedisError, OSError) as exc:
                if not self._stop.is_set():
                    wait = outage.failed(exc)  # one line when it goes, one when it is back
            except Exception:  # stop() pulls the socket away mid-read: not worth a trace
                if not self._stop.is_set():
                    log.exception("live feed reader failed")
                wait = FAILURE_PAUSE_S
            self.subscriptions.unlink()
            self._hang_up()
            self._drop_all()
            # the backoff, cut short by a stream starting since this try began (its browser
            # would otherwise be refused while Redis is back, until the backoff's next try),
            # but never below RETRY_FLOOR_S between tries, however many browsers reconnect
            if self._wanted.wait(wait) and not self._stop.is_set():
                self._stop.wait(RETRY_FLOOR_S)

    def _listen(self, outage):
        link = self._link = Link(self.config, self.name, self.subscriptions)
        try:
            outage.recovered()
            while not self._stop.is_set():
                link.send()
                link.read(self.dispatch)
                link.probe()
                link.wait()
        finally:
            link.close()

    def _hang_up(self):
        link, self._link = self._link, None
        if link is not None:
            link.hang_up()

    def dispatch(self, channel, raw):
        """Hand one published message to the local streams it concerns."""
        if (user := keys.tagged_id(channel, keys.USER_CHANNEL_PREFIX)) is not None:
            targets = self.by_user.get(user)
            make = Message.parse
        elif (symbol := keys.tagged_id(channel, keys.TICKS_CHANNEL_PREFIX)) is not None:
            targets = self.by_symbol.get(symbol)
            make = _tick
        elif (user := keys.tagged_id(channel, keys.WATCH_CHANNEL_PREFIX)) is not None:
            self._rewatch_user(user, raw)
            return
        else:
            return
        message = make(raw) if targets else None
        metrics.hub_message(message)
        if message is not None and message.event == REVOKED:
            ended = message.data if isinstance(message.data, list) else ()
            for client in tuple(targets):
                if client.credential in ended:
                    client.close()
        elif message is not None:
            for client in tuple(targets):
                client.put(message)

    def end_streams(self):
        """End every open stream (SSE and WebSocket); their browsers reconnect and replay."""
        self._drop_all()

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


def _channels(user_id, symbols):
    """The channels one stream needs: its user's, its user's watch list, its symbols' ticks."""
    return (keys.user_channel(user_id), keys.watch_channel(user_id),
            *(keys.ticks_channel(s) for s in symbols))


def get_hub(app):
    """The app's hub, made on first use (it connects only when a stream attaches)."""
    hub = app.extensions.get("fanout")
    if hub is None:
        keepalive = float(app.config.get("STREAM_KEEPALIVE_S", DEFAULT_KEEPALIVE_S))
        hub = app.extensions.setdefault("fanout", Hub(app.config, keepalive=keepalive))
    return hub


def stream_count(app):
    hub = app.extensions.get("fanout")
    return len(hub.clients) if hub is not None else 0
