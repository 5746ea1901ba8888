"""Riding out a Redis outage: back off with jitter, and say so once when it starts and ends.

Every background process waits for Redis this way instead of exiting: Redis restarting,
loading its append-only file (BusyLoadingError, a ConnectionError) or frozen (timeouts)
costs a wait, never a crash, and the log holds one line per change of state, not one per try.
"""

import logging
import random
import time

import redis

from webapp.core import logs

# On a Redis Cluster also a failover under way: a slot whose master is gone and not yet
# replaced (CLUSTERDOWN, MASTERDOWN, TRYAGAIN, or redis-py finding no node for a slot).
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterDownError,
              redis.exceptions.TryAgainError, redis.exceptions.SlotNotCoveredError)
DEFAULT_BASE_S, DEFAULT_CAP_S = 0.1, 5.0

log = logging.getLogger(__name__)


class Outage:
    """One process's view of Redis: up, or down since when; `failed` says how long to wait."""

    def __init__(self, who, base=DEFAULT_BASE_S, cap=DEFAULT_CAP_S, rng=random):
        self.who, self.base, self.cap, self.rng = who, base, cap, rng
        self.since = None
        self.attempt = 0

    @property
    def down(self):
        return self.since is not None

    def failed(self, exc):
        """Note a failed call; returns the seconds to wait before the next try."""
        if self.since is None:
            self.since = time.monotonic()
            logs.event(log, "redis_down", logging.WARNING, who=self.who,
                       error=logs.error_text(exc, 200))
        ceiling = min(self.cap, self.base * 2 ** self.attempt)
        self.attempt = min(self.attempt + 1, 16)
        return self.rng.uniform(ceiling / 2, ceiling)

    def recovered(self):
        if self.since is not None:
            logs.event(log, "redis_back", who=self.who,  # news that needs no one: INFO
                       down_s=time.monotonic() - self.since)
        self.since, self.attempt = None, 0

    def wait_until_up(self, client, stop):
        """Block until `client` answers PING (True) or `stop` is set (False)."""
        while not stop.is_set():
            try:
                client.ping()
            except REDIS_DOWN as exc:
                stop.wait(self.failed(exc))
                continue
            self.recovered()
            return True
        return False
