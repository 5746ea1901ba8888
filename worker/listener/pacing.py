"""Pacing for the listener: reconnect backoff, the connection attempt budget, the message budget."""

import random
import threading
import time
from collections import deque

DEFAULT_BACKOFF_BASE_S = 0.5
DEFAULT_BACKOFF_MAX_S = 5.0  # through a short outage: a trader waits it plus this at most
# A long outage (this many failures in a row, about a minute) waits longer between attempts:
# many connections failing every 2.5-5 s for minutes would spend Binance's 300 attempts per
# 5 minutes per IP wherever the shared budget cannot count (Redis away, hosts behind a NAT).
LONG_OUTAGE_AFTER = 16
LONG_OUTAGE_STRETCH = 6  # its cap: 6 times the short one's (30 s by default)
# Binance allows 5 incoming messages a second, pongs included; we keep 3 for control
# messages and the rest as headroom for pongs and for frames bunched up in transit.
DEFAULT_CONTROL_PER_S = 3
# Binance allows 300 connection attempts per 5 minutes per IP. A bucket of 40 refilled at
# 0.8 a second allows at most 40 + 0.8 * 300 = 280 in any 5 minutes: 20 to spare.
DEFAULT_ATTEMPTS_BURST = 40
DEFAULT_ATTEMPTS_PER_S = 0.8


class Backoff:
    """Delays doubling from `base` to `cap` (LONG_OUTAGE_STRETCH times it after
    LONG_OUTAGE_AFTER in a row), each drawn from [d/2, d] so peers spread out."""

    def __init__(self, base=DEFAULT_BACKOFF_BASE_S, cap=DEFAULT_BACKOFF_MAX_S, rng=random):
        self.base, self.cap, self.rng = base, cap, rng
        self.attempt = 0

    def next(self):
        cap = self.cap * (LONG_OUTAGE_STRETCH if self.attempt >= LONG_OUTAGE_AFTER else 1)
        ceiling = min(cap, self.base * 2 ** self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self):
        self.attempt = 0


class AttemptBudget:
    """Connection attempts as a token bucket; one per process, shared by its connections."""

    def __init__(self, burst=DEFAULT_ATTEMPTS_BURST, per_s=DEFAULT_ATTEMPTS_PER_S,
                 clock=time.monotonic):
        self.burst, self.per_s, self.clock = burst, per_s, clock
        self.tokens, self.at = float(burst), clock()
        self.lock = threading.Lock()

    def take(self):
        """Spend one attempt and return 0.0, or return the seconds until one is free."""
        with self.lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.per_s)
            self.at = now
            if self.tokens >= 1 - 1e-9:  # a wait of exactly the time returned must suffice
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.per_s

    def refund(self):
        """Give back an attempt taken but not made (the shared budget said to wait)."""
        with self.lock:
            self.tokens = min(self.burst, self.tokens + 1)


class MessageBudget:
    """At most `limit` messages in any sliding window of `window` seconds."""

    def __init__(self, limit=DEFAULT_CONTROL_PER_S, window=1.0, clock=time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self.sent = deque()

    def _trim(self):
        horizon = self.clock() - self.window
        while self.sent and self.sent[0] <= horizon:
            self.sent.popleft()

    def available(self):
        self._trim()
        return max(0, self.limit - len(self.sent))

    def ready_in(self):
        """Seconds until a message may go (0.0 if one may now)."""
        if self.available():
            return 0.0
        return self.sent[-self.limit] + self.window - self.clock()

    def spend(self):
        """Record one message sent (pongs too: they must go out whatever the budget)."""
        self.sent.append(self.clock())
