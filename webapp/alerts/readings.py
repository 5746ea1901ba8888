"""Where the market stands for each alert: its last value and how far it is from firing.

distance_pct (the README's Alerts section says it for users): the level the price must
reach, minus the last price, as a percentage of it; positive when the level is above. A
channel's level is its nearer bound; a move's distance is in percentage points of the move
still missing.
"""

import logging

import redis

from webapp import clock
from webapp.alerts import index as alert_index
from webapp.core import logs
from webapp.core.outage import REDIS_DOWN
from webapp.market import symbols, tickers

log = logging.getLogger(__name__)

LEVELS = ("above", "below", "crossing_up", "crossing_down", "crossing", "volume_above")
CHANNELS = ("channel_exit", "channel_enter")
MOVES = {"pct_up": "min", "pct_down": "max"}  # the window extreme a move is measured from
DIGITS = 6  # of distance_pct: float noise (1.0000000000002) says nothing


NOT_READ = {"last_price": None, "last_price_at": None, "distance_pct": None}


def looked_up(alerts):
    """What is shown beside alerts: {"prices": tickers.last_values, "checks":
    symbols.verdicts, "readings": readings}. With Redis away, nothing known: the alerts
    are SQL's, and the answer to a write already made must not be a 503, which its client
    would retry, writing the alert twice."""
    seen = {alert.symbol for alert in alerts}
    try:
        return {"prices": tickers.last_values(seen), "checks": symbols.verdicts(seen),
                "readings": readings(alerts)}
    except (redis.RedisError, *REDIS_DOWN) as exc:  # a cluster mid-failover's too
        logs.event(log, "market_not_read", logging.WARNING,
                   error=logs.error_text(exc, 200))
        return {"prices": {}, "checks": dict.fromkeys(seen, symbols.UNVERIFIED),
                "readings": dict.fromkeys((alert.id for alert in alerts), NOT_READ)}


def _float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def last_values(symbols):
    """tickers.last_values as numbers, which the distances are computed with."""
    return {symbol: {name: _float(value) for name, value in values.items()}
            for symbol, values in tickers.last_values(symbols).items()}


def distance_pct(alert, last, extreme=None):
    """How far `alert` is from firing at `last` (module docstring); None when that means nothing.

    `extreme` is a move alert's window low (pct_up) or high (pct_down) as (price, ms).
    """
    if last is None or last <= 0:
        return None
    if alert.condition in LEVELS:
        return round((alert.target - last) / last * 100, DIGITS)
    if alert.condition in CHANNELS:
        bound = min((alert.target, alert.high), key=lambda level: abs(level - last))
        return round((bound - last) / last * 100, DIGITS)
    if alert.condition not in MOVES or extreme is None or extreme[0] <= 0:
        return None
    if alert.condition == "pct_up":
        moved = (last / extreme[0] - 1) * 100
    else:
        moved = (1 - last / extreme[0]) * 100
    return round(alert.target - moved, DIGITS)


def readings(alerts):
    """{alert id: {last_price, last_price_at, distance_pct}}: every symbol's last values and
    every window a move alert is measured over, each in one round trip."""
    values = last_values(alert.symbol for alert in alerts)
    windows = {(a.symbol, a.window_s, MOVES[a.condition]) for a in alerts if a.condition in MOVES}
    extremes = alert_index.window_extremes(windows)
    out = {}
    for alert in alerts:
        seen = values[alert.symbol]
        volume = alert.condition == "volume_above"
        last, ms = (seen["volume"], seen["vts"]) if volume else (seen["price"], seen["ts"])
        extreme = None
        if alert.condition in MOVES:
            extreme = extremes[(alert.symbol, alert.window_s, MOVES[alert.condition])]
        out[alert.id] = {"last_price": last,
                         "last_price_at": None if ms is None else clock.ms_to_iso(ms),
                         "distance_pct": distance_pct(alert, last, extreme)}
    return out
