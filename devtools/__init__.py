"""Tools that start and exercise Tickerbell on one machine, outside the app itself: the
supervisor behind `make run` (launch.py) and its private Redis (redisd.py), the fake Binance
feed for tests, benchmarks and `make demo` (fakefeed*.py), and the demo seed (demo.py)."""
