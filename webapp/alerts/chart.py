"""What the alerts page's chart of one symbol shows: its recent prices, and where the user's
alerts on it fired (their notifications in the inbox, which keeps 7 days)."""

from webapp import clock
from webapp.inbox import service as inbox
from webapp.market import tickers

DEFAULT_DAYS = 7  # as far back as the inbox keeps notifications
MARKER_PAGES = 5  # inbox pages read for markers at most: a chart, not an audit
MARKER_PAGE_SIZE = 100
FIRED_TYPES = ("PRICE_ALERT",)  # volume alerts fire on a volume: no point on a price chart


def fired(user_id, symbol, since_ms):
    """[{alert_id, ts, price, title}] oldest first: the user's alerts on `symbol` that fired
    since `since_ms`, from their notifications that name an alert."""
    found = []
    for ntype in FIRED_TYPES:
        cursor = None
        for _ in range(MARKER_PAGES):
            items, cursor = inbox.list_page(user_id, MARKER_PAGE_SIZE, cursor, ntype=ntype)
            found += [_marker(n) for n in map(inbox.to_api, items)
                      if n["alert_id"] and n["symbol"] == symbol
                      and n["created_at"] >= since_ms and n["current_price"] is not None]
            if not cursor or (items and items[-1]["created_at"] < since_ms):
                break
    return sorted(found, key=lambda m: m["ts"])


def _marker(n):
    return {"alert_id": n["alert_id"], "ts": n["created_at"], "price": n["current_price"],
            "title": n["title"]}


def data(user_id, symbol, now_ms=None):
    """The chart's JSON: the symbol's prices ([ms, price], oldest first) and fired markers.

    Each fire is a trade too: its price joins the points, so its marker has a place on the
    line even where the history has no sample.
    """
    since = (now_ms or clock.now_ms()) - DEFAULT_DAYS * tickers.DAY_MS
    markers = fired(user_id, symbol, since)
    points = dict(tickers.chart_points(symbol, since))
    points.update((m["ts"], m["price"]) for m in markers)
    return {"symbol": symbol, "points": sorted(points.items()), "fired": markers}
