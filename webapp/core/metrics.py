"""Every Prometheus metric, its name and its labels, like webapp/keys.py for Redis keys.

Call sites do one line each through the helpers below. Values that live in Redis (queue
depths, failed jobs, breakers, listener connections) are not mirrored here: /metrics reads
them when scraped (webapp/metrics/collector.py).

With PROMETHEUS_MULTIPROC_DIR set (`make run` sets it), every process of one install writes
its values to files there and /metrics sums them; without it (one process, the tests) the
default registry holds them. Labels stay a small fixed set: a symbol's group, never the symbol.
"""

import os
import time
import zlib

from prometheus_client import Counter, Gauge, Histogram

from webapp.notify import types as notification_types

PREFIX = "tickerbell_"
SYMBOL_GROUPS = 8  # ticks are counted per CRC-32 bucket of the symbol, the shards' hash
MAX_CACHED_SYMBOLS = 10_000  # the symbol -> counters cache starts over past this
ALERT_TYPES = {"price": "PRICE_ALERT", "volume": "VOLUME_ALERT"}  # match.lua's, per tick kind
CHANNELS = ("email", "sms", "push")  # anything else is a destination (dest:<id>)
OTHER = "other"
# A tick's Lua call takes ~0.3 ms; a storm's batches take longer.
CALL_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25, 1.0)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DELIVERY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

TICKS_RECEIVED = Counter(PREFIX + "ticks_received", "Ticks read from Binance.", ["group"])
TICKS_MATCHED = Counter(PREFIX + "ticks_matched", "Ticks the matcher has run.", ["group"])
MATCHER_CALL = Histogram(PREFIX + "matcher_call_seconds", "Duration of one match.lua call.",
                         buckets=CALL_BUCKETS)
ALERTS_FIRED = Counter(PREFIX + "alerts_fired", "Alerts the matcher fired.", ["type"])
NOTIFICATIONS = Counter(PREFIX + "notifications", "Notifications created (stored in an inbox).",
                        ["type", "source"])
STREAMS = Gauge(PREFIX + "live_streams", "Open live streams.", ["transport"],
                multiprocess_mode="livesum")
HUB_LAG = Histogram(PREFIX + "hub_lag_seconds",
                    "From a notification's write in Redis to the hub handing it to its streams.",
                    buckets=LAG_BUCKETS)
RECONNECTS = Counter(PREFIX + "listener_reconnects", "Binance connections lost or replaced.",
                     ["reason"])
DELIVERIES = Counter(PREFIX + "deliveries", "Delivery attempts by outcome.",
                     ["channel", "status"])
DELIVERY_LATENCY = Histogram(PREFIX + "delivery_latency_seconds",
                             "From a notification's creation to its delivery being sent.",
                             ["channel"], buckets=DELIVERY_BUCKETS)
EVENTS = Counter(PREFIX + "events", "POST /api/v1/events intake by outcome.", ["outcome"])

# Read from Redis at scrape time (webapp/metrics/collector.py); named here with the rest.
QUEUE_DEPTH = PREFIX + "queue_depth"
QUEUE_FAILED = PREFIX + "queue_failed_jobs"
BREAKER_STATE = PREFIX + "breaker_state"
LISTENER_CONNECTIONS = PREFIX + "listener_connections"
LISTENER_UP = PREFIX + "listener_up"
REDIS_UP = PREFIX + "redis_up"

_by_symbol = {}  # symbol -> its group's (received, matched) children: one dict read a tick


def multiprocess_dir():
    """Where every process writes its values; None: this process's registry alone."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def symbol_group(symbol):
    return str(zlib.crc32(symbol.upper().encode()) % SYMBOL_GROUPS)


def _tick_counters(symbol):
    counters = _by_symbol.get(symbol)
    if counters is None:
        if len(_by_symbol) >= MAX_CACHED_SYMBOLS:
            _by_symbol.clear()
        group = symbol_group(symbol)
        counters = _by_symbol[symbol] = (TICKS_RECEIVED.labels(group), TICKS_MATCHED.labels(group))
    return counters


def tick_received(symbol):
    _tick_counters(symbol)[0].inc()


def tick_matched(symbol, kind, fired):
    """Count a tick the matcher ran and what it fired; returns `fired`."""
    _tick_counters(symbol)[1].inc()
    if fired:
        ntype = ALERT_TYPES[kind]
        ALERTS_FIRED.labels(ntype).inc(len(fired))
        NOTIFICATIONS.labels(ntype, "alert").inc(len(fired))
    return fired


def notifications_created(notifications, source):
    """Count notifications the router stored, by type, from `source` (events, hook, ...)."""
    counts = {}
    for n in notifications:
        ntype = n.get("type")
        ntype = ntype if notification_types.get(ntype) else OTHER
        counts[ntype] = counts.get(ntype, 0) + 1
    for ntype, count in counts.items():
        NOTIFICATIONS.labels(ntype, source).inc(count)


def stream_opened(client):
    STREAMS.labels(client.transport).inc()


def stream_closed(client):
    STREAMS.labels(client.transport).dec()


def hub_message(message):
    """A notification's id is its Redis stream entry id, `<ms>-<seq>`: its age is the lag."""
    if message is not None and message.event == "notification" and message.id:
        written_ms = _entry_ms(message.id)
        if written_ms is not None:
            HUB_LAG.observe(max(0.0, time.time() - written_ms / 1000))


def reconnect(reason):
    RECONNECTS.labels(reason).inc()


def channel_label(channel):
    return channel if channel in CHANNELS else "destination"


def delivered(channel, notification_id, status):
    """Count one delivery attempt's outcome; a sent one's latency too. Returns `status`."""
    if status is None:
        return None
    label = channel_label(channel)
    DELIVERIES.labels(label, str(status)).inc()
    created_ms = _entry_ms(notification_id)
    if status == "sent" and created_ms is not None:
        DELIVERY_LATENCY.labels(label).observe(max(0.0, time.time() - created_ms / 1000))
    return status


def events_intake(status, body):
    """Each event accepted or rejected; a whole request replayed, conflicting or unreadable."""
    if body.get("replayed"):
        EVENTS.labels("replayed").inc()
    elif status == 409:
        EVENTS.labels("conflict").inc()
    elif "accepted" in body:
        EVENTS.labels("accepted").inc(body["accepted"])
        EVENTS.labels("rejected").inc(body["rejected"])
    else:
        EVENTS.labels("invalid").inc()


def process_dead(pid):
    """A gunicorn worker exited: its open-stream gauge leaves the sums."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def _entry_ms(entry_id):
    """The milliseconds of `<ms>-<seq>[-<uid>]`, or None (a digest's id)."""
    head = str(entry_id).partition("-")[0]
    return int(head) if head.isdigit() else None
