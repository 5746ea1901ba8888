"""A symbol's last trade on the pages, even when it came within a second of the one shown.

The match script publishes a symbol's price for pages and sparklines at most once a second
(by the trades' own times), so a trade soon after a published one is recorded but not shown.
While trades keep coming, the next second's publishes it; when they stop, nothing would, and
a quiet symbol's page would show a price the market has left, beside an alert that fired at
the newer one. So a second after a symbol's last trade the listener asks that the recorded
price be published if it was not (PUBLISH_LATE: nothing if it was, so two listeners or a
retry publish it once). Only Redis knows what was shown: the ask goes for every symbol gone
quiet, from a thread of its own, so the listener's reads never wait for it.
"""

import logging
import threading
from time import monotonic

from redis.exceptions import RedisError

from webapp import keys
from webapp.core import pubsub
from webapp.core.outage import Outage
from webapp.core.scripting import run_all

log = logging.getLogger(__name__)

QUIET_S = 1.0  # a symbol with no trade for this long gets its last one shown
CHECK_S = 0.25  # how often the symbols are looked over

# KEYS: 1 the symbol's market (keys.price)  2 its sparkline  3 its prices' channel
# ARGV: 1 the publish command  2 the symbol
# Returns 1 if it published, 0 if the last trade was shown already (or none is recorded).
PUBLISH_LATE = """
local m = redis.call('HMGET', KEYS[1], 'price', 'ts', 'pub')
local ts = tonumber(m[2])
if not m[1] or not ts or ts <= (tonumber(m[3] or '0') or 0) then return 0 end
redis.call('HSET', KEYS[1], 'pub', m[2])
redis.call(ARGV[1], KEYS[3], '{"symbol":"' .. ARGV[2] .. '","price":' .. m[1] .. ',"ts":'
  .. m[2] .. '}')
redis.call('RPUSH', KEYS[2], '[' .. m[2] .. ',' .. m[1] .. ']')
redis.call('LTRIM', KEYS[2], -300, -1)
return 1
"""


class LatePrices:
    """Symbols traded lately, and the late publish of those gone quiet: `publish`, or a
    thread calling it (`start`, `close`)."""

    def __init__(self, redis):
        self.redis = redis
        self._script = redis.register_script(PUBLISH_LATE)
        self._publish = pubsub.command(redis)
        self._lock = threading.Lock()  # the listener's connections trade from their threads
        self._traded = {}  # symbol -> when (monotonic) its last trade was matched
        self._closing = threading.Event()
        self._thread = None

    def traded(self, symbol):
        with self._lock:
            self._traded[symbol] = monotonic()

    def publish(self, now=None):
        """Publish the last trade of each symbol quiet for QUIET_S, where it was not shown;
        returns how many were published. On a Redis error they stay due, and it is raised."""
        now = monotonic() if now is None else now
        with self._lock:
            due = [s for s, at in self._traded.items() if now - at >= QUIET_S]
            for symbol in due:
                del self._traded[symbol]
        if not due:
            return 0
        calls = [([keys.price(s), keys.spark(s), keys.ticks_channel(s)], [self._publish, s])
                 for s in due]
        try:
            return sum(run_all(self.redis, self._script, calls))
        except RedisError:
            with self._lock:  # due again, unless a newer trade came meanwhile
                for symbol in due:
                    self._traded.setdefault(symbol, now - QUIET_S)
            raise

    def start(self):
        self._thread = threading.Thread(target=self._run, name="late-prices", daemon=True)
        self._thread.start()
        return self

    def close(self):
        self._closing.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self):
        outage = Outage("late-prices")
        while not self._closing.wait(CHECK_S):
            try:
                self.publish()
                outage.recovered()
            except RedisError as exc:  # what was due stays due
                self._closing.wait(outage.failed(exc))
            except Exception:  # the thread outlives each failure
                log.exception("late prices: the look-over failed; the next one tries again")
