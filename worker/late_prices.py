"""A symbol's last trade on the pages, even when it came within a second of the one shown.

The match script publishes a symbol's price for pages and sparklines at most once a second
(by the trades' own times), so a trade soon after a published one is recorded but not shown.
While trades keep coming, the next second's publishes it; when they stop, nothing would, and
a quiet symbol's page would show a price the market has left, beside an alert that fired at
the newer one. The listener follows the rule as the trades pass, and a second after a trade
it held back, with none since, asks that the recorded price be published if it was not
(PUBLISH_LATE: nothing if it was, so two listeners or a retry publish it once).
"""

import threading
from time import monotonic

from redis.exceptions import RedisError

from webapp import keys
from webapp.core import pubsub
from webapp.core.scripting import run_all

QUIET_S = 1.0  # a symbol with no trade for this long gets its last one shown
SHOWN_EVERY_MS = 1000  # the match script's rule: a trade this long after the last shown
CHECK_S = 0.25  # how often the symbols are looked over (the listener asks at every read)

# KEYS: 1 the symbol's market (keys.price)  2 its sparkline  3 its prices' channel
# ARGV: 1 the publish command  2 the symbol
# Returns the trade time (ms) it published, 0 if the last trade was shown already (or none
# is recorded).
PUBLISH_LATE = """
local m = redis.call('HMGET', KEYS[1], 'price', 'ts', 'pub')
local ts = tonumber(m[2])
if not m[1] or not ts or ts <= (tonumber(m[3] or '0') or 0) then return 0 end
redis.call('HSET', KEYS[1], 'pub', m[2])
redis.call(ARGV[1], KEYS[3], '{"symbol":"' .. ARGV[2] .. '","price":' .. m[1] .. ',"ts":'
  .. m[2] .. '}')
redis.call('RPUSH', KEYS[2], '[' .. m[2] .. ',' .. m[1] .. ']')
redis.call('LTRIM', KEYS[2], -300, -1)
return ts
"""


class LatePrices:
    """Symbols whose last trade the match script held back, and their late publish. Shared
    by a listener's connections (each a thread of its own), hence the lock."""

    def __init__(self, redis):
        self.redis = redis
        self._script = redis.register_script(PUBLISH_LATE)
        self._publish = pubsub.command(redis)
        self._lock = threading.Lock()
        self._shown = {}  # symbol -> the trade time (ms) the script's rule last published
        self._held = {}  # symbol -> when (monotonic) a trade of it was last held back
        self._next_check = 0.0

    def traded(self, symbol, ts_ms):
        """A trade matched: held back, as the script's rule goes, when it came within a
        second (by trade time) of the one last shown. Another listener's publish is not
        seen here: its symbol's next trade a second later shows it."""
        with self._lock:
            if ts_ms - self._shown.get(symbol, 0) >= SHOWN_EVERY_MS:
                self._shown[symbol] = ts_ms
                self._held.pop(symbol, None)
            else:
                self._held[symbol] = monotonic()

    def publish(self, now=None):
        """Publish the last trade of each symbol quiet for QUIET_S whose trade was held back;
        returns how many were published. On a Redis error they stay due, and it is raised."""
        now = monotonic() if now is None else now
        with self._lock:
            if now < self._next_check:
                return 0
            self._next_check = now + CHECK_S
            due = [s for s, at in self._held.items() if now - at >= QUIET_S]
            for symbol in due:
                del self._held[symbol]
        if not due:
            return 0
        calls = [([keys.price(s), keys.spark(s), keys.ticks_channel(s)], [self._publish, s])
                 for s in due]
        try:
            shown = run_all(self.redis, self._script, calls)
        except RedisError:
            with self._lock:  # due again, unless a newer trade came meanwhile
                for symbol in due:
                    self._held.setdefault(symbol, now - QUIET_S)
            raise
        with self._lock:  # the script's rule counts from these now
            for symbol, ts_ms in zip(due, shown, strict=True):
                if ts_ms:
                    self._shown[symbol] = max(self._shown.get(symbol, 0), ts_ms)
        return sum(1 for ts_ms in shown if ts_ms)
