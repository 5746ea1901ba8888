"""Demo prices for the fake feed: a mean-reverting random walk around real-looking levels."""

import asyncio
import math
import random

from devtools.fakefeed_protocol import now_ms, price_str

# Starting prices and 24 h base volumes; alerts seeded near these fire within a minute.
DEMO_MARKETS = {
    "BTCUSDT": (104250.0, 21500.0),
    "ETHUSDT": (3420.5, 312000.0),
    "BNBUSDT": (690.2, 95000.0),
    "SOLUSDT": (172.35, 2400000.0),
}
OTHER_MARKET = (1.0, 1000000.0)
TRADES_PER_S = 3.0
STEP_S = 0.1


class Walk:
    """Log-space Ornstein-Uhlenbeck: wanders about 0.3 % around `base` and keeps coming back."""

    def __init__(self, base, sigma=0.0004, theta=0.01, rng=random):
        self.base, self.sigma, self.theta, self.rng = base, sigma, theta, rng
        self.x = 0.0

    def step(self):
        self.x += -self.theta * self.x + self.sigma * self.rng.gauss(0.0, 1.0)
        return self.base * math.exp(self.x)


class Market:
    def __init__(self, symbol, rng=random):
        price, volume = DEMO_MARKETS.get(symbol, OTHER_MARKET)
        self.symbol = symbol
        self.price_walk = Walk(price, rng=rng)
        self.volume_walk = Walk(volume, sigma=0.0008, theta=0.02, rng=rng)
        self.open = self.high = self.low = self.last = price
        self.rng = rng

    def trade(self):
        # Binance quotes these pairs to the cent; the walk itself stays unrounded
        self.last = round(self.price_walk.step(), 2)
        self.high, self.low = max(self.high, self.last), min(self.low, self.last)
        qty = round(self.rng.expovariate(1.0) * 1000 / self.last, 5) or 0.00001
        return self.last, qty

    def mini_ticker(self):
        volume = self.volume_walk.step()
        return {"e": "24hrMiniTicker", "E": now_ms(), "s": self.symbol,
                "c": price_str(self.last), "o": price_str(self.open),
                "h": price_str(self.high), "l": price_str(self.low),
                "v": price_str(volume), "q": price_str(volume * self.last)}


def subscribed_symbols(feed, kinds):
    """Upper-case symbols with a subscribed stream of one of `kinds`."""
    symbols = set()
    for stream in feed.subscriptions():
        sym, _, kind = stream.partition("@")
        if kind in kinds:
            symbols.add(sym.upper())
    return symbols


async def replay(feed, rng=None):
    """Run inside the feed's loop: a few trades a second per symbol, a miniTicker each second."""
    rng = rng or random.Random()
    markets = {}
    ticks = 0
    while True:
        await asyncio.sleep(STEP_S)
        ticks += 1
        for symbol in subscribed_symbols(feed, ("aggTrade", "trade")):
            market = markets.setdefault(symbol, Market(symbol, rng))
            if rng.random() < TRADES_PER_S * STEP_S:
                price, qty = market.trade()
                feed._publish_trade(symbol, price, qty, now_ms())
        if ticks % round(1 / STEP_S) == 0:
            for symbol in subscribed_symbols(feed, ("miniTicker",)):
                market = markets.setdefault(symbol, Market(symbol, rng))
                feed.publish(f"{symbol.lower()}@miniTicker", market.mini_ticker())
