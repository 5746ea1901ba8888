"""Where the market stands for each alert: its last value and how far it is from firing.

distance_pct (the README's Alerts section says it for users): the level the price must
reach, minus the last price, as a percentage of it; positive when the level is above. A
channel's level is its nearer bound; a move's distance is in percentage points of the move
still missing.
"""

from datetime import UTC, datetime

from webapp.alerts import index as alert_index
from webapp.market import tickers

LEVELS = ("above", "below", "crossing_up", "crossing_down", "crossing", "volume_above")
CHANNELS = ("channel_exit", "channel_enter")
MOVES = {"pct_up": "min", "pct_down": "max"}  # the window extreme a move is measured from
DIGITS = 6  # of distance_pct: float noise (1.0000000000002) says nothing


def _float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def last_values(symbols):
    """tickers.last_values as numbers, which the distances are computed with."""
    return {symbol: {name: _float(value) for name, value in values.items()}
            for symbol, values in tickers.last_values(symbols).items()}


def _iso_ms(ms):
    if ms is None:
        return None
    when = datetime.fromtimestamp(ms / 1000, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    """{alert id: {last_price, last_price_at, distance_pct}}: every symbol's last values in
    one round trip, then one read per window a move alert is measured over."""
    values = last_values(alert.symbol for alert in alerts)
    extremes = {}
    out = {}
    for alert in alerts:
        seen = values[alert.symbol]
        volume = alert.condition == "volume_above"
        last, ms = (seen["volume"], seen["vts"]) if volume else (seen["price"], seen["ts"])
        extreme = None
        if alert.condition in MOVES and last is not None:
            window = (alert.symbol, alert.window_s, MOVES[alert.condition])
            if window not in extremes:
                extremes[window] = alert_index.window_extreme(*window)
            extreme = extremes[window]
        out[alert.id] = {"last_price": last, "last_price_at": _iso_ms(ms),
                         "distance_pct": distance_pct(alert, last, extreme)}
    return out
