"""What a Binance frame carries, checked before it reaches the matcher."""

# No price or 24 h volume on Binance comes near it (the most traded meme coins see ~1e14 a
# day); a garbled exponent does, and would meet every `above` alert.
MAX_MARKET_VALUE = 1e18


def market_value(text, positive=False):
    """A price (> 0) or a volume (>= 0) from Binance's string; ValueError if no market has it."""
    if isinstance(text, bool):  # float(True) is 1.0
        raise TypeError(f"not a number: {text!r}")
    value = float(text)
    low_ok = value > 0 if positive else value >= 0
    if not (low_ok and value < MAX_MARKET_VALUE):  # NaN fails both
        raise ValueError(f"out of range: {text!r}")
    return value
