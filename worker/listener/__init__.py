"""The Binance listener: connections (connection.py) pooled by symbol (pool.py), what each
subscribes to (subscriptions.py), reconnect pacing, ticks held while Redis is away, and its
hosting as a never-ending RQ job behind a lease (hosting.py, lease.py)."""
