"""Tick matching: one atomic Lua call per tick finds, claims and notifies the alerts it meets.

On a Redis Cluster the call claims and records the batch in the symbol's slot, and a second,
idempotent step writes the users' side in theirs (worker/outbox.py).
"""

import math
from pathlib import Path
from time import perf_counter

from redis.exceptions import RedisError

from webapp import keys
from webapp.alerts import scripts
from webapp.alerts.index import WINDOWS_S, fmt_num, idx_key, prune_symbol, rearm_key
from webapp.core import metrics, pubsub
from webapp.extensions import is_cluster
from worker.outbox import Outbox

SCRIPT = scripts.USES + (Path(__file__).with_name("match.lua")).read_text()
# Alerts fired per script call: a storm is split so no single call holds Redis for long.
DEFAULT_BATCH = 2000
CONTINUE, RETRY = 1, 2  # ARGV[7] of match.lua
# ARGV[8], ARGV[9]: the notified users' keys are known only inside the script
USER_PREFIXES = [keys.REPLAY_PREFIX, keys.USER_CHANNEL_PREFIX]
INLINE, OUTBOX = "inline", "outbox"  # ARGV[10]


def _keys(symbol, kind, mode):
    """match.lua's KEYS, in its order (listed at the top of the script)."""
    up = "above" if kind == "price" else "volume_above"
    windows = [key for window_s in WINDOWS_S for key in (
        keys.index(symbol, f"pctup:{window_s}"), keys.rearm(symbol, f"pctup:{window_s}"),
        keys.index(symbol, f"pctdown:{window_s}"), keys.rearm(symbol, f"pctdown:{window_s}"),
        keys.window(symbol, window_s, "min"), keys.window(symbol, window_s, "max"))]
    return [
        keys.price(symbol), idx_key(symbol, up), rearm_key(symbol, up),
        idx_key(symbol, "below"), rearm_key(symbol, "below"), keys.outbox(symbol),
        keys.alerts_fired(symbol), keys.FIRED if mode == INLINE else keys.outbox(symbol),
        keys.spark(symbol), keys.alerts(symbol), keys.ticks_channel(symbol),
        keys.index(symbol, "xup"), keys.rearm(symbol, "xup"),
        keys.index(symbol, "xdown"), keys.rearm(symbol, "xdown"),
        keys.index(symbol, "xany"), keys.rearm(symbol, "xany_lo"), keys.rearm(symbol, "xany_hi"),
        keys.index(symbol, "chin_lo"), keys.index(symbol, "chin_hi"),
        keys.index(symbol, "chab"), keys.index(symbol, "chbe"), keys.index(symbol, "pend"),
        keys.index(symbol, "cool" if kind == "price" else "coolvol"),
        keys.kinds_in_use(symbol), *windows,
    ]


class Matcher:
    """Matches ticks against the alert index; safe to run twice on the same feed."""

    def __init__(self, redis, batch=DEFAULT_BATCH, mode=None):
        self.redis = redis
        self.batch = batch
        self.mode = mode or (OUTBOX if is_cluster(redis) else INLINE)
        self.outbox = Outbox(redis)
        self._script = redis.register_script(SCRIPT)
        self._tail = [*USER_PREFIXES, self.mode, pubsub.command(redis)]
        # (symbol, kind) -> the args of a tick whose call failed: it is retried before the
        # next tick of its stream, as a retry, so a batch left by a lost reply still fires
        self._failed = {}
        self._key_cache = {}

    def on_price(self, symbol: str, price: float, ts_ms: int, seq: int = 0) -> list[str]:
        """Record a trade price and fire what it meets; returns the new notification ids.

        `seq` is the trade id: ticks older than (ts_ms, seq) already seen are dropped.
        """
        return self._tick(symbol, "price", price, ts_ms, seq)

    def on_volume(self, symbol: str, volume: float, ts_ms: int, seq: int = 0) -> list[str]:
        """Record a 24 h base volume and fire the volume alerts it meets."""
        return self._tick(symbol, "volume", volume, ts_ms, seq)

    def _keys(self, symbol, kind):
        keys = self._key_cache.get((symbol, kind))
        if keys is None:
            keys = self._key_cache[(symbol, kind)] = _keys(symbol, kind, self.mode)
        return keys

    def _tick(self, symbol, kind, value, ts_ms, seq):
        value = float(value)
        # A garbled tick must never fire anything; a trade at 0 would meet every `below`.
        if not math.isfinite(value) or value < 0 or (kind == "price" and value == 0):
            return []
        symbol = symbol.upper()
        keys = self._keys(symbol, kind)
        args = [symbol, kind, fmt_num(value), int(ts_ms), self.batch, int(seq), 0]
        fired = []
        failed = self._failed.pop((symbol, kind), None)
        if failed is not None:
            fired = self._run(keys, failed)
            if failed[:-1] == args[:-1]:  # the very tick that failed: done now
                return metrics.tick_matched(symbol, kind, fired)
        return metrics.tick_matched(symbol, kind, fired + self._run(keys, args))

    def _run(self, keys, args):
        fired, symbol = [], args[0]
        while True:
            try:
                started = perf_counter()
                more, left, *rest = self._script(keys=keys, args=[*args, *self._tail])
                metrics.matcher_call(perf_counter() - started)
            except RedisError:
                self._failed[(symbol, args[1])] = [*args[:-1], RETRY]
                raise
            if self.mode == INLINE:
                fired.extend(str(n) for n in rest)
            elif rest:
                fired.extend(self._complete(symbol, args, rest))
            if int(left) >= 0:  # only now: the sweep finds a batch left by the registry
                prune_symbol(self.redis, symbol, int(left))
            if not int(more):
                return fired
            args = [*args[:-1], CONTINUE]  # the same tick goes on: no ordering check

    def _complete(self, symbol, args, step):
        """The users' step of a batch; if it fails, Outbox.sweep finishes the batch and the
        tick is retried before the next, so its later batches still fire."""
        try:
            return self.outbox.complete(symbol, step[0], args[2], args[3], step[1])
        except RedisError:
            self._failed[(symbol, args[1])] = [*args[:-1], RETRY]
            raise
