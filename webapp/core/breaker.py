"""Circuit breakers whose state lives in Redis, so /health and every process see it."""

import time

from webapp import keys
from webapp.extensions import get_redis

DEFAULT_FAILURE_THRESHOLD = 5
DEFAULT_RESET_TIMEOUT = 30.0  # seconds open before one trial call (half-open)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class Breaker:
    """closed -> (threshold failures) -> open -> (reset timeout) -> half-open -> closed/open."""

    def __init__(self, name, threshold=DEFAULT_FAILURE_THRESHOLD,
                 reset_timeout=DEFAULT_RESET_TIMEOUT, redis=None, clock=time.time):
        self.key = keys.breaker(name)
        self.name = name
        self.threshold = threshold
        self.reset_timeout = reset_timeout
        self._redis = redis
        self._clock = clock

    @property
    def redis(self):
        return self._redis or get_redis()

    def state(self):
        """The stored state with `state` made current (open turns half-open on time)."""
        raw = self.redis.hgetall(self.key)
        failures = int(raw.get("failures", 0))
        opened_at = float(raw.get("opened_at", 0) or 0)
        state = raw.get("state", CLOSED)
        if state == OPEN and self._clock() - opened_at >= self._reset_of(raw):
            state = HALF_OPEN
        return {"state": state, "failures": failures, "last_error": raw.get("last_error", ""),
                "opened_at": opened_at or None, "name": self.name}

    def _reset_of(self, raw):
        """How long it stays open: as its opener said, so that /health, `flask status` and
        the metrics, which make their own Breaker, read the listener's own."""
        return float(raw.get("reset_s") or self.reset_timeout)

    def allow(self):
        """May a call go out now? Half-open lets calls through as trials."""
        return self.state()["state"] != OPEN

    def retry_in(self):
        raw = self.redis.hgetall(self.key)
        opened_at = float(raw.get("opened_at", 0) or 0)
        if raw.get("state") != OPEN:
            return 0.0
        return max(0.0, opened_at + self._reset_of(raw) - self._clock())

    def success(self):
        self.redis.hset(self.key, mapping={"state": CLOSED, "failures": 0, "opened_at": 0})

    def failure(self, error):
        """Count a failure; open (again) at the threshold or after a failed trial."""
        before = self.state()
        failures = before["failures"] + 1
        mapping = {"failures": failures, "last_error": str(error)[:500]}
        opened = before["state"] == HALF_OPEN or (
            before["state"] == CLOSED and failures >= self.threshold)
        if opened:
            mapping.update(state=OPEN, opened_at=self._clock(), reset_s=self.reset_timeout)
        self.redis.hset(self.key, mapping=mapping)
        return opened
