"""What a text frame from Binance's combined stream says: a tick, a shutdown, or a reply."""

import json

PRICE_EVENTS = ("aggTrade", "trade")
# A frame that parses but says nothing usable raises one of these.
BAD_MESSAGE = (AttributeError, KeyError, TypeError, ValueError)


def parse(raw):
    """("tick", (kind, symbol, value, ts_ms, seq)), ("shutdown", None), ("reply", msg),
    or (None, None) for what we do not use."""
    msg = json.loads(raw)
    data = msg.get("data", msg)
    event = data.get("e") if isinstance(data, dict) else None
    if event in PRICE_EVENTS:
        seq = int(data.get("a") or data.get("t") or 0)
        return "tick", ("price", data["s"], float(data["p"]), int(data["T"]), seq)
    if event == "24hrMiniTicker":
        return "tick", ("volume", data["s"], float(data["v"]), int(data["E"]), 0)
    if event == "serverShutdown":
        return "shutdown", None
    if "id" in msg:
        return "reply", msg
    return None, None
