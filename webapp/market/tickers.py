"""Live prices for the symbols a user watches: last trade, a sparkline of recent samples, the
change over 24 h, and a symbol's recent prices for a chart."""

import json

from sqlalchemy import select

from webapp import clock, keys
from webapp.extensions import db, get_redis
from webapp.models import Alert

SPARK_WIDTH, SPARK_HEIGHT = 120, 32
MAX_WATCHED = 50  # a page of tickers, and the tick channels one stream follows
DAY_MS = 24 * 3600 * 1000
# The price history is sampled every 15 min: a day-old sample is at most this much older
# than a day. An older one would say "24 h" of a longer change.
DEFAULT_DAY_SLACK_MS = 3600 * 1000
MAX_CHART_POINTS = 2000


def watched_symbols(user_id):
    """The symbols of the user's active alerts, sorted."""
    query = (select(Alert.symbol).where(Alert.user_id == user_id, Alert.active)
             .distinct().order_by(Alert.symbol).limit(MAX_WATCHED))
    return list(db.session.scalars(query))


def polyline(points, width=SPARK_WIDTH, height=SPARK_HEIGHT):
    """SVG polyline points for [(ts, price), ...], scaled to the box; '' for fewer than 2."""
    if len(points) < 2:
        return ""
    t0, t1 = points[0][0], points[-1][0]
    prices = [p for _, p in points]
    low, high = min(prices), max(prices)
    span_t, span_p = (t1 - t0) or 1, (high - low) or 1
    return " ".join(
        f"{(t - t0) * width / span_t:.1f},{height - (p - low) * height / span_p:.1f}"
        for t, p in points)


def _samples(raw):
    out = []
    for item in raw:
        try:
            ts, price = json.loads(item)
            out.append((int(ts), float(price)))
        except (ValueError, TypeError):
            continue
    return out


def tickers(symbols, now_ms=None):
    """[{symbol, price, ts, points, polyline, day_ago, change_24h}] from tb:price, tb:spark and
    the price history, one round trip. `day_ago` is the price a day ago (None without one)."""
    day = (now_ms or clock.now_ms()) - DAY_MS
    with get_redis().pipeline(transaction=False) as pipe:
        for symbol in symbols:
            pipe.hmget(keys.price(symbol), "price", "ts")
            pipe.lrange(keys.spark(symbol), 0, -1)
            pipe.zrevrangebyscore(keys.price_history(symbol), day, day - DEFAULT_DAY_SLACK_MS,
                                  start=0, num=1)
        replies = pipe.execute()
    out = []
    for i, symbol in enumerate(symbols):
        (price, ts), raw, old = replies[3 * i:3 * i + 3]
        points = _samples(raw)
        day_ago = _history_price(old[0]) if old else None
        out.append({"symbol": symbol, "price": price, "ts": int(ts) if ts else None,
                    "points": points, "polyline": polyline(points), "day_ago": day_ago,
                    "change_24h": change_pct(day_ago, price)})
    return out


def _history_price(member):
    """A price-history member, `ms:price`, as its price (None if malformed)."""
    try:
        return float(member.partition(":")[2])
    except ValueError:
        return None


def change_pct(before, now):
    """The change from `before` to `now` in %, to 2 places; None when either is missing."""
    try:
        before, now = float(before), float(now)
    except (TypeError, ValueError):
        return None
    return round((now / before - 1) * 100, 2) if before > 0 else None


def chart_points(symbol, since_ms):
    """[(ms, price)] oldest first: the price history since `since_ms`, the sparkline's recent
    samples and the last trade, at most MAX_CHART_POINTS (the newest)."""
    with get_redis().pipeline(transaction=False) as pipe:
        pipe.zrangebyscore(keys.price_history(symbol), since_ms, "+inf")
        pipe.lrange(keys.spark(symbol), 0, -1)
        pipe.hmget(keys.price(symbol), "price", "ts")
        history, spark, (price, ts) = pipe.execute()
    found = {}
    for member in history:
        ms, value = member.partition(":")[0], _history_price(member)
        if ms.isdigit() and value is not None:
            found[int(ms)] = value
    found.update(_samples(spark))
    if price is not None and ts:
        found[int(ts)] = float(price)
    return sorted(found.items())[-MAX_CHART_POINTS:]


def last_values(symbols):
    """{symbol: {price, ts, volume, vts}}: the last trade and 24 h volume, with their times."""
    symbols = sorted(set(symbols))
    with get_redis().pipeline(transaction=False) as pipe:
        for symbol in symbols:
            pipe.hmget(keys.price(symbol), "price", "ts", "volume", "vts")
        replies = pipe.execute()
    return {symbol: {"price": price, "ts": int(ts) if ts else None,
                     "volume": volume, "vts": int(vts) if vts else None}
            for symbol, (price, ts, volume, vts) in zip(symbols, replies, strict=True)}


def age_text(ts_ms, now_ms=None):
    """How long ago a price was seen, as a person says it: "4 s ago", "3 min ago"."""
    if not ts_ms:
        return "no trade seen yet"
    seconds = max(0, ((now_ms or clock.now_ms()) - int(ts_ms)) // 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def volume_text(value):
    """A 24 h volume for people: 95,216.03."""
    try:
        return f"{float(value):,.2f}"
    except (TypeError, ValueError):
        return "–"
