"""GET /metrics: the Prometheus exposition of webapp/core/metrics.py and of what Redis holds."""
