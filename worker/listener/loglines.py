"""The listener's structured log lines: `event=connected streams=4 ...`, one per event."""

import json
import logging

from webapp import clock
from webapp.core.logs import STANDARD

log = logging.getLogger("worker.listener")
# what an operator's alert on WARNING must see: the market or Redis lost, ticks dropped
TROUBLE = {"disconnected", "breaker_opened", "redis_down", "held_dropped", "lease_lost",
           "replace_failed", "bad_message", "control_refused", "stream_cap", "server_error",
           "connection_failed"}


def logline(event, **fields):
    """`event=connected streams=4 ...`: one grep-able line per event."""
    parts = [f"event={event}"]
    for key, value in fields.items():
        if isinstance(value, float):
            value = f"{value:.2f}"
        elif isinstance(value, str) and (not value or any(c in value for c in ' "=')):
            value = json.dumps(value)
        parts.append(f"{key}={value}")
    # the fields again as the record's own, for LOG_FORMAT=json (a name LogRecord uses stays
    # in the message only)
    extra = {key: value for key, value in fields.items() if key not in STANDARD}
    trouble = event in TROUBLE or (event == "reconnecting" and "error" in fields)
    level = logging.WARNING if trouble else logging.INFO
    log.log(level, " ".join(parts), extra={"event": event, **extra})


now_ms = clock.now_ms  # the listener's modules take it from here
