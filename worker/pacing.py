"""Pacing for the listener: reconnect backoff with jitter, and the outgoing message budget."""

import random
import time
from collections import deque

DEFAULT_BACKOFF_BASE_S = 0.5
DEFAULT_BACKOFF_MAX_S = 30.0
# Binance allows 5 incoming messages a second, pongs included; we keep 3 for control
# messages and the rest as headroom for pongs and for frames bunched up in transit.
DEFAULT_CONTROL_PER_S = 3


class Backoff:
    """Delays doubling from `base` to `cap`, each drawn from [d/2, d] so peers spread out."""

    def __init__(self, base=DEFAULT_BACKOFF_BASE_S, cap=DEFAULT_BACKOFF_MAX_S, rng=random):
        self.base, self.cap, self.rng = base, cap, rng
        self.attempt = 0

    def next(self):
        ceiling = min(self.cap, self.base * 2 ** self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self):
        self.attempt = 0


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

    def spend(self):
        """Record one message sent (pongs too: they must go out whatever the budget)."""
        self.sent.append(self.clock())
