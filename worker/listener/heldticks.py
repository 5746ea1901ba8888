"""Riding out Redis in the listener: the gate that notices it gone, the ticks held meanwhile,
and the breaker read and written through the gate.

Held per symbol and kind are the low, the high and the last tick. Applied in time order when
Redis answers again, they fire every alert whose target the market reached meanwhile, while
memory stays three ticks a stream however long the outage. What they cannot tell apart (an
alert that crossed twice fires once) is in the README. A tick whose reply was lost may be
applied again: the matcher drops a tick it has seen, or finishes it (worker/matcher.py).
"""

import time

import redis

from webapp.core import logs
from webapp.exceptions import TicksNotMatched
from worker.listener.loglines import logline


def match_ticks(handler, ticks):
    """Hand ticks read together to the handler; returns those left (none), or raises
    TicksNotMatched. A handler without `on_ticks` gets them one by one."""
    if hasattr(handler, "on_ticks"):
        handler.on_ticks(ticks)
        return []
    for done, tick in enumerate(ticks):
        try:
            apply_tick(handler, *tick)
        except redis.RedisError as exc:
            raise TicksNotMatched(ticks[done:]) from exc
    return []


def apply_tick(handler, kind, symbol, value, ts_ms, seq):
    if kind == "price":
        handler.on_price(symbol, value, ts_ms, seq)
    else:
        handler.on_volume(symbol, value, ts_ms)


class HeldTicks:
    """`add` while Redis is down; `flush(apply)` when it is back."""

    def __init__(self):
        self._held = {}  # (kind, symbol) -> ticks still to apply, (ts_ms, seq, value), in order
        self.count = 0  # ticks held since the last complete flush
        self.first_ms = None  # the earliest time held since then (some ticks are let go)

    def __len__(self):
        return sum(len(ticks) for ticks in self._held.values())

    def add(self, kind, symbol, value, ts_ms, seq=0):
        tick = (ts_ms, seq, value)
        ticks = self._held.get((kind, symbol), []) + [tick]
        # on a tie the earlier tick stands for the extreme: it leaves more ticks after it
        low = min(ticks, key=lambda t: (t[2], t[0], t[1]))
        high = max(ticks, key=lambda t: (t[2], -t[0], -t[1]))
        self._held[(kind, symbol)] = sorted({low, high, tick})
        self.count += 1
        if self.first_ms is None or ts_ms < self.first_ms:
            self.first_ms = ts_ms

    def flush(self, apply):
        """Call apply(kind, symbol, value, ts_ms, seq) for each tick in time order.

        Returns how many were applied. An error from `apply` propagates and leaves the
        ticks not yet applied held, in order.
        """
        applied = 0
        for key in list(self._held):
            ticks = self._held[key]
            while ticks:
                ts_ms, seq, value = ticks[0]
                apply(*key, value, ts_ms, seq)
                ticks.pop(0)
                applied += 1
            del self._held[key]
        self.count, self.first_ms = 0, None
        return applied


class RedisGate:
    """Redis as one listener thread sees it: calls go through while it answers; once one
    fails they are skipped (no spin, no wait on a frozen server) until a retry gets through.
    One log line when it goes, one when it is back."""

    def __init__(self, retry_s):
        self.retry_s = retry_s
        self.since = None  # monotonic time of the first failure; None while up
        self._retry_at = 0.0

    @property
    def down(self):
        return self.since is not None

    def call(self, func, default=None):
        """`func()`, or `default` while Redis is down or when the call fails."""
        if self.since is not None:
            return default
        try:
            return func()
        except redis.RedisError as exc:
            self.failed(exc)
            return default

    def failed(self, exc):
        if self.since is None:
            self.since = time.monotonic()
            self._retry_at = self.since + self.retry_s
            logline("redis_down", error=logs.error_text(exc, 200))

    def retry_due(self):
        """True at most once every `retry_s` while down: time for one try to get back."""
        now = time.monotonic()
        if self.since is None or now < self._retry_at:
            return False
        self._retry_at = now + self.retry_s
        return True

    def back(self, **fields):
        logline("redis_back", down_s=time.monotonic() - self.since, **fields)
        self.since = None


class GatedBreaker:
    """The `binance` breaker as one listener thread sees it: read and written through the
    Redis gate, so a Redis outage neither blocks a connect nor loses the breaker's story."""

    def __init__(self, breaker, gate, idle_s):
        self.breaker, self.gate, self.idle_s = breaker, gate, idle_s

    def wait(self):
        """Seconds to wait before connecting: 0 while closed (or with no breaker)."""
        if self.breaker is None or self.gate.call(self.breaker.allow, default=True):
            return 0.0
        return self.gate.call(self.breaker.retry_in, default=0.0) or self.idle_s

    def success(self):
        if self.breaker is not None:
            self.gate.call(self._close)

    def _close(self):
        was = self.breaker.state()
        if was["state"] != "closed" or was["failures"]:  # else nothing to write
            self.breaker.success()
        if was["state"] != "closed":
            logline("breaker_closed", breaker=self.breaker.name)

    def failure(self, error, delay):
        """Count a failed attempt; returns `delay`, or the breaker's wait if it opened."""
        if self.breaker is not None and self.gate.call(lambda: self.breaker.failure(error)):
            delay = max(delay, self.gate.call(self.breaker.retry_in, default=0.0))
            logline("breaker_opened", breaker=self.breaker.name, retry_in_s=delay)
        return delay
