"""Market data: Binance's symbol list (symbols.py), live prices and sparklines (tickers.py),
and the price history the digests read (price_history.py)."""
