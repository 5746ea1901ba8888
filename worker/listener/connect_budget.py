"""Binance's budget of connection attempts per IP, shared by every listener shard of a host.

Binance allows 300 connection attempts per 5 minutes per IP. Each process keeps its own
bucket (`pacing.AttemptBudget`: bursts, and the only limit while Redis is away); on top of
it every attempt of every shard behind one egress host is counted in one sliding window in
Redis (`tb:connects:{host}`), so N shards together stay under the one limit.
"""

import itertools
import os
import socket
import time
import uuid

import redis

from webapp import keys
from worker.listener.pacing import AttemptBudget

DEFAULT_CONNECT_BUDGET = 300
DEFAULT_CONNECT_WINDOW_S = 300.0
REDIS_RETRY_S = 5.0  # after a failed call, the local bucket alone decides this long

# A sliding window on Redis's own clock, so hosts with skewed clocks count alike: drop the
# attempts older than the window, count this one if there is room, else answer how many ms
# until the oldest leaves it.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""


def egress_host():
    """Who Binance counts us as: shards on one host leave by its address."""
    return socket.gethostname()


class ConnectBudget:
    """`take()` as `AttemptBudget.take()`: 0.0 to connect now, else seconds to wait first."""

    def __init__(self, redis_client, host=None, budget=DEFAULT_CONNECT_BUDGET,
                 window_s=DEFAULT_CONNECT_WINDOW_S, local=None):
        self.redis, self.key = redis_client, keys.connect_budget(host or egress_host())
        self.budget, self.window_ms = budget, int(window_s * 1000)
        self.local = local or AttemptBudget()
        self.script = redis_client.register_script(_TAKE)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.ids = itertools.count(1)
        self.skip_until = 0.0

    def take(self):
        wait = self.local.take()
        if wait:
            return wait
        wait = self._shared()
        if wait:
            self.local.refund()  # no attempt was made
        return wait

    def _shared(self):
        """Count one attempt in Redis; 0.0, or the seconds until the window has room."""
        if time.monotonic() < self.skip_until:
            return 0.0
        member = f"{self.token}:{next(self.ids)}"
        try:
            wait_ms = self.script(keys=[self.key], args=[self.budget, self.window_ms, member])
        except redis.RedisError:
            # Never deaf for want of Redis: the process's own bucket still keeps it under
            # Binance's limit, and the window resumes counting when Redis answers.
            self.skip_until = time.monotonic() + REDIS_RETRY_S
            return 0.0
        return int(wait_ms) / 1000
