"""The listener's structured log lines: `event=connected streams=4 ...`, one per event."""

import logging

from webapp import clock
from webapp.core import logs

log = logging.getLogger("worker.listener")
# what an operator's alert on WARNING must see: the market or Redis lost, ticks dropped
TROUBLE = {"disconnected", "breaker_opened", "redis_down", "held_dropped", "lease_lost",
           "replace_failed", "bad_message", "control_refused", "stream_cap", "server_error",
           "connection_failed"}


def logline(event, **fields):
    """`event=connected streams=4 ...`: one grep-able line per event (logs.event)."""
    trouble = event in TROUBLE or (event == "reconnecting" and "error" in fields)
    logs.event(log, event, logging.WARNING if trouble else logging.INFO, **fields)


now_ms = clock.now_ms  # the listener's modules take it from here
