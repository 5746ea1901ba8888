"""Binance's market-stream formats, as the fake feed speaks them: payloads and control replies."""

import json
import re
import time
from urllib.parse import parse_qs, urlsplit

STREAM_NAME = re.compile(r"^[a-z0-9]+@[a-zA-Z0-9_]+$")  # symbols are lower-case


class StreamLimit(ValueError):
    """A request that would take a connection past its stream cap."""


def now_ms():
    return int(time.time() * 1000)


def price_str(value):
    """Binance sends prices and quantities as strings with 8 decimals."""
    return f"{value:.8f}"


def trade_payloads(symbol, price, qty, ts, trade_id):
    """The same trade as `@aggTrade` and `@trade` payloads."""
    common = {"E": ts, "s": symbol, "p": price_str(price), "q": price_str(qty), "T": ts,
              "m": trade_id % 2 == 0, "M": True}
    agg = {"e": "aggTrade", "a": trade_id, "f": trade_id, "l": trade_id, **common}
    return agg, {"e": "trade", "t": trade_id, **common}


def mini_ticker_payload(symbol, close, volume, quote_volume=None, ts=None, open_=None,
                        high=None, low=None):
    """A `@miniTicker` payload: rolling 24 h close, open, high, low and volumes."""
    quote = quote_volume if quote_volume is not None else volume * close
    return {"e": "24hrMiniTicker", "E": ts or now_ms(), "s": symbol, "c": price_str(close),
            "o": price_str(open_ or close), "h": price_str(high or close),
            "l": price_str(low or close), "v": price_str(volume), "q": price_str(quote)}


def combined(stream, data):
    return json.dumps({"stream": stream, "data": data})


def server_shutdown_event():
    return combined("!serverShutdown", {"e": "serverShutdown", "E": now_ms()})


def streams_from_path(path):
    """Streams named by `/stream?streams=a/b` or `/ws/a/b`: (streams, error or None)."""
    parts = urlsplit(path)
    if parts.path == "/stream":
        raw = parse_qs(parts.query).get("streams", [""])[0]
    elif parts.path.startswith("/ws"):
        raw = parts.path[len("/ws"):].strip("/")
    else:
        return [], f"unknown path {parts.path}"
    streams = [s for s in raw.split("/") if s]
    bad = [s for s in streams if not STREAM_NAME.match(s)]
    return streams, (f"invalid stream names {bad[:5]}" if bad else None)


def control_reply(streams, raw, max_streams):
    """Apply one control message to a connection's `streams` (a set).

    Returns (reply, msg, over_cap): the reply to send, the parsed message (None if not
    JSON), and whether a SUBSCRIBE was refused for passing `max_streams`.
    """
    try:
        msg = json.loads(raw)
    except ValueError:
        return {"code": 3, "msg": "Invalid JSON", "id": None}, None, False
    if not isinstance(msg, dict):
        return {"code": 2, "msg": "Invalid request: expected an object", "id": None}, msg, False
    try:
        result = _apply(streams, msg.get("method"), msg.get("params"), max_streams)
    except ValueError as exc:
        reply = {"code": 2, "msg": f"Invalid request: {exc}", "id": msg.get("id")}
        return reply, msg, isinstance(exc, StreamLimit)
    return {"result": result, "id": msg.get("id")}, msg, False


def _apply(streams, method, params, max_streams):
    if method == "LIST_SUBSCRIPTIONS":
        return sorted(streams)
    if method not in ("SUBSCRIBE", "UNSUBSCRIBE"):
        raise ValueError(f"unknown method {method!r}")
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        raise ValueError("params must be a list of stream names")
    bad = [p for p in params if not STREAM_NAME.match(p)]
    if bad:
        raise ValueError(f"invalid stream names {bad[:5]}")
    if method == "UNSUBSCRIBE":
        streams.difference_update(params)
    elif len(streams | set(params)) > max_streams:
        raise StreamLimit(f"too many streams (max {max_streams})")
    else:
        streams.update(params)
    return None


# What the fake's exchangeInfo lists: the demo markets and a few more that trade, and one
# that does not (status BREAK), as Binance lists a pair it has stopped.
LISTING = {
    **dict.fromkeys(["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT",
                     "DOGEUSDT", "LTCUSDT", "LINKUSDT", "BTCUSDC", "ETHUSDC", "ETHBTC",
                     "BNBBTC", "SOLBTC"], "TRADING"),
    "BTCBUSD": "BREAK",
}
QUOTES = ("USDT", "USDC", "BUSD", "BTC")


def exchange_info_payload(listing, path):
    """`GET /api/v3/exchangeInfo`'s answer for `listing` ({symbol: status}), as the query asks.

    Honours `symbolStatus` and `showPermissionSets`; every symbol is a spot symbol.
    """
    query = parse_qs(urlsplit(path).query)
    wanted = query.get("symbolStatus", [None])[0]
    sets = [["SPOT"]] if query.get("showPermissionSets", ["true"])[0] != "false" else []
    symbols = []
    for symbol, status in sorted(listing.items()):
        if wanted and status != wanted:
            continue
        quote = next((q for q in QUOTES if symbol.endswith(q)), symbol[-3:])
        symbols.append({"symbol": symbol, "status": status, "baseAsset": symbol[:-len(quote)],
                        "quoteAsset": quote, "isSpotTradingAllowed": True, "filters": [],
                        "permissions": [], "permissionSets": sets})
    return {"timezone": "UTC", "serverTime": now_ms(), "rateLimits": [], "exchangeFilters": [],
            "symbols": symbols}
