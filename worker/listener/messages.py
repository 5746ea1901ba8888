"""What a text frame from Binance's combined stream says, checked before the matcher sees it."""

import json
import time

import orjson

from worker.listener.loglines import logline

PRICE_EVENTS = ("aggTrade", "trade")
# A frame that parses but says nothing usable raises one of these (OverflowError: int() of
# an infinite time; RecursionError: the standard library's read of 100,000 nested arrays).
BAD_MESSAGE = (AttributeError, KeyError, TypeError, ValueError, OverflowError, RecursionError)
# No price or 24 h volume on Binance comes near it (the most traded meme coins see ~1e14 a
# day); a garbled exponent does, and would meet every `above` alert.
MAX_MARKET_VALUE = 1e18
MAX_SYMBOL = 32
# A trade stamped further ahead of our clock is garbled: ticks only move forward, so taken in,
# it would hold back every later trade of its symbol (its alerts deaf) until that time came.
# Binance's clock and ours agree within a second or so; an hour leaves room for a clock off.
MAX_AHEAD_MS = 3600 * 1000


def parse(raw):
    """(what, body): ("tick", (kind, symbol, value, ts_ms, seq)), ("shutdown", None),
    ("reply", msg), ("error", msg) for an error settling no request, or ("unhandled", msg)
    for a stream or an event we never asked for. Raises one of BAD_MESSAGE."""
    msg = _loads(raw)
    if not isinstance(msg, dict):
        raise TypeError(f"a JSON {type(msg).__name__}, not an object")
    data = msg.get("data", msg)
    event = data.get("e") if isinstance(data, dict) else None
    if event in PRICE_EVENTS:
        seq = int(data.get("a") or data.get("t") or 0)
        price = market_value(data["p"], positive=True)
        return "tick", ("price", _symbol(data["s"]), price, _when(data["T"]), seq)
    if event == "24hrMiniTicker":
        return "tick", ("volume", _symbol(data["s"]), market_value(data["v"]), _when(data["E"]), 0)
    if event == "serverShutdown":
        return "shutdown", None
    if "id" in msg:
        return "reply", msg
    return ("error" if "code" in msg else "unhandled"), msg


def _symbol(value):
    """Binance's symbols are ASCII letters and digits (BTCUSDT), as ours are."""
    if not (isinstance(value, str) and value.isascii() and value.isalnum()
            and len(value) <= MAX_SYMBOL):
        raise ValueError(f"not a symbol: {str(value)[:40]!r}")
    return value


def _when(value):
    """A trade's (or a ticker's) time in ms, refused when more than an hour ahead of ours."""
    ts_ms = int(value)
    if ts_ms - time.time() * 1000 > MAX_AHEAD_MS:
        raise ValueError(f"a time {ts_ms} more than an hour ahead of this clock")
    return ts_ms


def _loads(raw):
    """orjson, three times faster on a trade; what it refuses (NaN, lone surrogates) the
    standard library reads as it always did. An integer past 64 bits becomes a float in
    orjson, which no field read here (ids and times, through int()) comes near."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def log_other(what, body, raw):
    """A line for what no one waits for: an error settling no request, an unasked stream."""
    if what == "error":
        logline("server_error", code=str(body["code"])[:40], text=str(body.get("msg"))[:200])
    elif what == "unhandled":
        logline("unhandled_message", stream=str(body.get("stream"))[:100], text=raw[:200])


def market_value(text, positive=False):
    """A price (> 0) or a volume (>= 0) from Binance's string; ValueError if no market has it."""
    if isinstance(text, bool):  # float(True) is 1.0
        raise TypeError(f"not a number: {text!r}")
    value = float(text)
    low_ok = value > 0 if positive else value >= 0
    if not (low_ok and value < MAX_MARKET_VALUE):  # NaN fails both
        raise ValueError(f"out of range: {text!r}")
    return value
