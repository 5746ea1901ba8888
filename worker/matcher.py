"""Tick matching: one atomic Lua call per tick finds, claims and notifies the alerts it meets."""

import math
from pathlib import Path

from webapp.alert_index import ALERTS, SYMBOLS, fmt_num, idx_key, rearm_key

SCRIPT = (Path(__file__).with_name("match.lua")).read_text()
# Alerts fired per script call: a storm is split so no single call holds Redis for long.
DEFAULT_BATCH = 2000


def _keys(symbol, kind):
    up = "above" if kind == "price" else "volume_above"
    return [
        f"tb:price:{symbol}", idx_key(symbol, up), rearm_key(symbol, up),
        idx_key(symbol, "below"), rearm_key(symbol, "below"),
        SYMBOLS, "tb:alerts:fired", "tb:fired", f"tb:spark:{symbol}", ALERTS,
    ]


class Matcher:
    """Matches ticks against the alert index; safe to run twice on the same feed."""

    def __init__(self, redis, batch=DEFAULT_BATCH):
        self.redis = redis
        self.batch = batch
        self._script = redis.register_script(SCRIPT)
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
            keys = self._key_cache[(symbol, kind)] = _keys(symbol, kind)
        return keys

    def _tick(self, symbol, kind, value, ts_ms, seq):
        value = float(value)
        # A garbled tick must never fire anything; a trade at 0 would meet every `below`.
        if not math.isfinite(value) or value < 0 or (kind == "price" and value == 0):
            return []
        keys = self._keys(symbol.upper(), kind)
        args = [symbol.upper(), kind, fmt_num(value), int(ts_ms), self.batch, int(seq), 0]
        fired = []
        while True:
            more, *nids = self._script(keys=keys, args=args)
            fired.extend(str(n) for n in nids)
            if not int(more):
                return fired
            args[-1] = 1  # the same tick continues: skip the ordering check
