"""Price samples for the digests: the listener's last prices, copied into a history every run."""

from webapp import clock, keys
from webapp.extensions import get_redis

DEFAULT_KEEP_MS = 35 * 24 * 3600 * 1000  # a monthly statement's worth, with margin


def sample(now_ms=None):
    """Periodic job: record the last trade of every watched symbol; return how many."""
    r = get_redis()
    now_ms = now_ms or clock.now_ms()
    symbols = sorted(r.hkeys(keys.SYMBOLS))
    pipe = r.pipeline(transaction=False)
    for symbol in symbols:
        pipe.hmget(keys.price(symbol), "price", "ts")
    recorded = 0
    write = r.pipeline(transaction=False)
    for symbol, (price, ts) in zip(symbols, pipe.execute(), strict=True):
        if price is None:
            continue
        write.zadd(keys.price_history(symbol), {f"{ts}:{price}": int(ts or now_ms)})
        write.zremrangebyscore(keys.price_history(symbol), "-inf", now_ms - DEFAULT_KEEP_MS)
        recorded += 1
    write.execute()
    return recorded


def record(symbol, price, ts_ms):
    """Add one sample (tests and backfills)."""
    get_redis().zadd(keys.price_history(symbol), {f"{ts_ms}:{price}": ts_ms})


def price_at(symbol, ts_ms):
    """The last sample at or before ts_ms, else the first after it; None with no samples."""
    r = get_redis()
    found = r.zrevrangebyscore(keys.price_history(symbol), ts_ms, "-inf", start=0, num=1)
    found = found or r.zrangebyscore(keys.price_history(symbol), ts_ms, "+inf", start=0, num=1)
    return float(found[0].partition(":")[2]) if found else None


def change(symbol, start_ms, end_ms):
    """(price at start, price at end, change in %) over a period, or None without samples."""
    first, last = price_at(symbol, start_ms), price_at(symbol, end_ms)
    if first is None or last is None:
        return None
    pct = (last - first) / first * 100 if first else 0.0
    return first, last, round(pct, 2)
