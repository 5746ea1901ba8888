"""As many Binance connections as the symbols need, each a `Listener` over its own share.

Binance allows 1024 streams a connection and each symbol takes two. The pool keeps every
connection at or under `max_streams`: a symbol stays on the connection it is on, a new one
goes to the first connection with room, another connection opens when all are full, and an
extra one left empty is closed. Each connection runs in its own thread with its own message
budget, backoff, pongs, reconnects and ticks held through a Redis outage; they share one
breaker and one connection attempt budget, which keeps the process (and, through Redis,
every shard of the host: `connect_budget.py`) under Binance's 300 connection attempts per
5 minutes. With shards, a pool follows only its shard's symbols and writes its own status.
"""

import threading
import time

import redis

from webapp import keys
from webapp.core import logs
from worker.listener.connection import Listener
from worker.listener.lag import status_field
from worker.listener.loglines import logline, now_ms
from worker.listener.pacing import AttemptBudget, Backoff
from worker.listener.subscriptions import wanted_symbols

DEFAULT_POOL_MAX_STREAMS = 1000  # Binance's cap is 1024: keep some headroom
STREAMS_PER_SYMBOL = 2  # aggTrade + miniTicker
JOIN_TIMEOUT_S = 5.0


def assign(shares, wanted, per_connection):
    """New shares (sets of symbols), index for index with `shares`, then any new ones."""
    kept = [set(share) & wanted for share in shares]
    placed = set().union(*kept)
    for symbol in sorted(wanted - placed):
        room = next((share for share in kept if len(share) < per_connection), None)
        if room is None:
            room = set()
            kept.append(room)
        room.add(symbol)
    return kept


class _Connection:
    """One pooled `Listener`, its share of the symbols, its thread and its own stop event."""

    def __init__(self, make_listener, share):
        self.share, self.stop, self.error = share, threading.Event(), None
        # Its thread reads `share` at each poll; the pool replaces it (a frozenset) whole.
        self.listener = make_listener(symbols=lambda: self.share)
        self.thread = threading.Thread(target=self._run, name="binance-listener", daemon=True)

    def _run(self):
        try:
            self.listener.run(self.stop)
        except BaseException as exc:  # the pool re-raises it: the job fails as it did alone
            self.error = exc


class ListenerPool:
    """Run with `run(stop)`; returns when `stop` is set or the lease is lost."""

    def __init__(self, redis_client, handler, url, *, lease=None, breaker=None,
                 backoff=None, attempts=None, max_streams=DEFAULT_POOL_MAX_STREAMS, poll_s=0.5,
                 heartbeat_s=1.0, shard=0, shards=1, **settings):
        self.redis, self.handler, self.url = redis_client, handler, url
        self.shard, self.shards = shard, shards  # this pool follows only its shard's symbols
        self.status_key = keys.listener_status(shard)
        self.lease, self.breaker = lease, breaker
        self.make_backoff = backoff or Backoff
        self.attempts = attempts or AttemptBudget()
        self.max_streams, self.poll_s, self.heartbeat_s = max_streams, poll_s, heartbeat_s
        self.per_connection = max(1, max_streams // STREAMS_PER_SYMBOL)
        self.settings = settings
        self.stop = threading.Event()
        self.conns, self.retiring = [], []
        self.last_tick_ms = 0
        self.redis_down_since = None

    def run(self, stop=None):
        self.stop = stop or self.stop
        try:
            while not self.stop.is_set():
                try:
                    self._reconcile()
                    self._beat()
                except redis.RedisError as exc:
                    self._redis_failed(exc)
                else:
                    self._redis_back()
                self._check_threads()
                self.stop.wait(min(self.poll_s, self.heartbeat_s))
        finally:
            self._shutdown()

    # -- the shares ------------------------------------------------------------------
    def _reconcile(self):
        current = [c.share for c in self.conns]
        wanted = wanted_symbols(self.redis, self.shard, self.shards)
        shares = assign(current, wanted, self.per_connection) or [set()]
        for conn, share in zip(self.conns, shares, strict=False):
            conn.share = frozenset(share)
        for share in shares[len(self.conns):]:
            self._open(frozenset(share))
        for conn in [c for c in self.conns if not c.share]:
            if len(self.conns) > 1:
                self._retire(conn)

    def _open(self, share):
        conn = _Connection(self._listener, share)
        self.conns.append(conn)
        conn.thread.start()
        logline("connection_opened", connections=len(self.conns), symbols=len(share))

    def _listener(self, symbols):
        return Listener(self.redis, self.handler, self.url, breaker=self.breaker,
                        backoff=self.make_backoff(), attempts=self.attempts,
                        max_streams=self.max_streams,
                        poll_s=self.poll_s, heartbeat_s=self.heartbeat_s, symbols=symbols,
                        status_key=None, **self.settings)

    def _retire(self, conn):
        conn.stop.set()
        self.conns.remove(conn)
        self.retiring.append(conn)
        logline("connection_closed", connections=len(self.conns))

    def _check_threads(self):
        self.retiring = [c for c in self.retiring if c.thread.is_alive()]
        for conn in self.conns:
            if not conn.thread.is_alive() and not self.stop.is_set():
                logline("connection_failed", error=repr(conn.error))
                raise RuntimeError("a listener connection ended") from conn.error

    def _shutdown(self):
        self.stop.set()
        for conn in self.conns + self.retiring:
            conn.stop.set()
        for conn in self.conns + self.retiring:
            conn.thread.join(JOIN_TIMEOUT_S)
        try:
            self._set_status(state="stopped")
        except redis.RedisError:
            pass  # the status goes stale on its own: its heartbeat stops

    # -- status and lease ------------------------------------------------------------
    def _beat(self):
        if self.lease is not None and not self.lease.renew():
            logline("lease_lost", holder=self.lease.holder() or "")
            self.stop.set()
            return
        self._set_status(**self._status())

    def _status(self):
        """One summary of all connections: connected only when every one is."""
        listeners = [c.listener for c in self.conns]
        states = {listener.state for listener in listeners}
        state = ("connected" if states == {"connected"}
                 else "backoff" if "backoff" in states else "connecting")
        self.last_tick_ms = max([self.last_tick_ms] + [lis.last_tick_ms for lis in listeners])
        status = {"state": state, "shards": self.shards,  # the count it works by, for others
                  "connections": sum(lis.state == "connected" for lis in listeners),
                  "last_tick_ms": self.last_tick_ms,
                  "streams": sum(listener.streams for listener in listeners),
                  **status_field([listener.lag.worst_ms() for listener in listeners]),
                  "connected_at": max([0] + [lis.status.get("connected_at", 0)
                                             for lis in listeners])}
        errors = [lis.status.get("last_error") for lis in listeners if lis.state != "connected"]
        status["last_error"] = next((e for e in errors if e), "")  # "": none now
        return status

    def _set_status(self, **fields):
        self.redis.hset(self.status_key, mapping={**fields, "heartbeat": now_ms()})

    # Shares and status wait for Redis: the connections keep reading and hold their ticks.
    # One line when it goes and one when it is back, not one a poll.
    def _redis_failed(self, exc):
        if self.redis_down_since is None:
            self.redis_down_since = time.monotonic()
            logline("redis_down", part="pool", error=logs.error_text(exc, 200))

    def _redis_back(self):
        if self.redis_down_since is not None:
            logline("redis_back", part="pool", down_s=time.monotonic() - self.redis_down_since)
            self.redis_down_since = None
