"""Development tools, not part of the product: `make run`'s supervisor (launch.py) and private
Redis (redisd.py), the fake Binance feed (fakefeed*.py) and the demo seed (demo.py)."""
