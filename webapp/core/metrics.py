"""Every Prometheus metric, its name and its labels, like webapp/keys.py for Redis keys.

Call sites do one line each through the helpers below. Values that live in Redis (queue
depths, failed jobs, breakers, listener connections) are not mirrored here: /metrics reads
them when scraped (webapp/metrics/collector.py).

With PROMETHEUS_MULTIPROC_DIR set (`make run` sets it), every process of one install writes
its values to files there and /metrics sums them; without it (one process, the tests) the
default registry holds them. Labels stay a small fixed set: a symbol's group, never the symbol.
"""

import collections
import functools
import os
import threading
import time
import zlib
from bisect import bisect_left
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram

from webapp.notify import types as notification_types

PREFIX = "tickerbell_"
SYMBOL_GROUPS = 8  # ticks are counted per CRC-32 bucket of the symbol, the shards' hash
MAX_CACHED_SYMBOLS = 10_000  # the symbol -> group cache starts over past this
FLUSH_S = 1.0  # a thread's tick counts reach /metrics this long after at most
ALERT_TYPES = {"price": "PRICE_ALERT", "volume": "VOLUME_ALERT"}  # the matcher's, per tick kind
CHANNELS = ("email", "sms", "push")  # anything else is a destination (dest:<id>)
OTHER = "other"
# where notifications other than alerts' come from (webapp/notify/router.py route's `source`)
SOURCES = ("events", "hook", "security", "broadcast", "cli", "app")
# A tick's Lua call takes ~0.3 ms; a storm's batches take longer.
CALL_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25, 1.0)
CALL_BOUNDS = list(CALL_BUCKETS)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DELIVERY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

TICKS_RECEIVED = Counter(PREFIX + "ticks_received", "Ticks read from Binance.", ["group"])
TICKS_MATCHED = Counter(PREFIX + "ticks_matched", "Ticks the matcher has run.", ["group"])
MATCHER_CALL = Histogram(PREFIX + "matcher_call_seconds", "Duration of one matcher call.",
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
DELIVERIES = Counter(PREFIX + "deliveries", "Delivery jobs by outcome.",
                     ["channel", "status"])
DELIVERY_LATENCY = Histogram(PREFIX + "delivery_latency_seconds",
                             "From a notification's creation (a reminder's: its round's "
                             "queueing) to its delivery being sent.",
                             ["channel"], buckets=DELIVERY_BUCKETS)
EVENTS = Counter(PREFIX + "events", "POST /api/v1/events intake by outcome.", ["outcome"])

# Read from Redis at scrape time (webapp/metrics/collector.py); named here with the rest.
QUEUE_DEPTH = PREFIX + "queue_depth"
QUEUE_FAILED = PREFIX + "queue_failed_jobs"
SLOW_STEPS_WAITING = PREFIX + "slow_steps_waiting"
SLOW_STEPS_PARKED = PREFIX + "slow_steps_parked"
BREAKER_STATE = PREFIX + "breaker_state"
LISTENER_CONNECTIONS = PREFIX + "listener_connections"
LISTENER_UP = PREFIX + "listener_up"
REDIS_UP = PREFIX + "redis_up"

_groups = {}  # symbol -> its group's index: one dict read a tick


class _Tally(threading.local):
    """A thread's tick counts, pushed to the metrics at most every FLUSH_S (or when the
    listener is idle): a tick pays a few integer additions instead of three locked updates."""

    def __init__(self):
        self.received, self.matched = [0] * SYMBOL_GROUPS, [0] * SYMBOL_GROUPS
        self.calls, self.call_s = [0] * (len(CALL_BUCKETS) + 1), 0.0  # per bucket, +Inf last
        self.due = time.monotonic() + FLUSH_S

    def flush(self):
        self.due = time.monotonic() + FLUSH_S
        for counts, metric in ((self.received, TICKS_RECEIVED), (self.matched, TICKS_MATCHED)):
            for group, count in enumerate(counts):
                if count:
                    counts[group] = 0
                    metric.labels(str(group)).inc(count)
        if any(self.calls):
            # prometheus_client has no call to observe many at once; these are what
            # Histogram.observe updates (its bucket counts are kept per bucket, not summed)
            for i, count in enumerate(self.calls):
                if count:
                    MATCHER_CALL._buckets[i].inc(count)
            MATCHER_CALL._sum.inc(self.call_s)
            self.calls, self.call_s = [0] * len(self.calls), 0.0


_tally = _Tally()


@functools.cache  # once a process
def count_from_zero():
    """Every series whose labels are known up front, at 0: each family is on the first scrape,
    and rate() and increase() see a series' first step (a series appears when first set).
    Only where /metrics is served: each process that does writes them to its own files, and
    a scrape reads every process's."""
    for group in map(str, range(SYMBOL_GROUPS)):
        TICKS_RECEIVED.labels(group)
        TICKS_MATCHED.labels(group)
    for ntype in ALERT_TYPES.values():
        ALERTS_FIRED.labels(ntype)
        NOTIFICATIONS.labels(ntype, "alert")
    for source in SOURCES:
        for ntype in (*notification_types.TYPES, OTHER):
            NOTIFICATIONS.labels(ntype, source)
    for transport in ("sse", "ws"):
        STREAMS.labels(transport)
    for reason in ("dropped", "failed", "replaced"):
        RECONNECTS.labels(reason)
    for channel in (*CHANNELS, "destination"):
        DELIVERY_LATENCY.labels(channel)
        for status in ("sent", "retrying", "failed", "outbox", "deferred"):
            DELIVERIES.labels(channel, status)
    for outcome in ("accepted", "rejected", "replayed", "conflict", "invalid"):
        EVENTS.labels(outcome)


def multiprocess_dir():
    """Where every process writes its values; None: this process's registry alone."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def symbol_group(symbol):
    return str(zlib.crc32(symbol.upper().encode()) % SYMBOL_GROUPS)


def _group(symbol):
    group = _groups.get(symbol)
    if group is None:
        if len(_groups) >= MAX_CACHED_SYMBOLS:
            _groups.clear()
        group = _groups[symbol] = int(symbol_group(symbol))
    return group


def tick_received(symbol):
    _tally.received[_group(symbol)] += 1


def matcher_call(seconds):
    tally = _tally
    tally.calls[bisect_left(CALL_BOUNDS, seconds)] += 1
    tally.call_s += seconds


def tick_matched(symbol, kind, fired):
    """Count a tick the matcher ran and what it fired; returns `fired`."""
    tally = _tally
    tally.matched[_group(symbol)] += 1
    if fired:
        alerts_fired(ALERT_TYPES[kind], len(fired))
    if time.monotonic() >= tally.due:
        tally.flush()
    return fired


def alerts_fired(ntype, count):
    """Count alerts fired, a notification each: a tick's (tick_matched), or what a tick fired
    before a Redis error cut it short (its retry returns only the rest)."""
    if count:
        ALERTS_FIRED.labels(ntype).inc(count)
        NOTIFICATIONS.labels(ntype, "alert").inc(count)


def flush_ticks(now=False):
    """Push this thread's tick counts when due (or `now`): the listener calls it while idle
    too, and as a connection's thread ends."""
    if now or time.monotonic() >= _tally.due:
        _tally.flush()


def notifications_created(notifications, source):
    """Count notifications the router stored, by type, from `source` (events, hook, ...)."""
    for ntype, count in collections.Counter(n.get("type") for n in notifications).items():
        NOTIFICATIONS.labels(ntype if notification_types.get(ntype) else OTHER,
                             source).inc(count)


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


def delivered(channel, notification_id, status, since_ms=None):
    """Count one delivery attempt's outcome; a sent one's latency too, from the notification's
    creation or from `since_ms` (a reminder's round: minutes later by design). Returns
    `status`."""
    if status is None:
        return None
    label = channel_label(channel)
    DELIVERIES.labels(label, str(status)).inc()
    created_ms = since_ms or _entry_ms(notification_id)
    if status == "sent" and created_ms is not None:
        DELIVERY_LATENCY.labels(label).observe(max(0.0, time.time() - created_ms / 1000))
    return status


def events_intake(status, body):
    """Each event accepted or rejected; a whole request replayed, conflicting or unreadable."""
    if body.get("replayed"):
        EVENTS.labels("replayed").inc()
    elif status == 409 or body.get("error") == "idempotency_key_reused":
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


def forget_dead_streams(path):
    """The open-stream gauges of processes gone without `process_dead` (a web master killed
    with its workers: no exit hook ran) leave the sums; /metrics calls it as it reads."""
    for file in Path(path).glob("gauge_live*_*.db"):
        pid = file.stem.rpartition("_")[2]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                file.unlink(missing_ok=True)  # another worker's scrape may have been first
            except OSError:  # not ours to delete: the scrape goes on, the count stays
                pass


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def forget_if_nothing_counted(path, pid):
    """A command's value files, if it counted nothing (`flask status`, most commands): each
    command that joins `make run`'s folder leaves its own, and every scrape reads them all."""
    from prometheus_client.mmap_dict import MmapedDict

    mine = list(Path(path).glob(f"*_{pid}.db"))
    try:
        if any(value for file in mine
               for _, value, _, _ in MmapedDict.read_all_values_from_file(str(file))):
            return
    except (OSError, RuntimeError):  # unreadable: left as it is
        return
    for file in mine:
        file.unlink(missing_ok=True)


def _entry_ms(entry_id):
    """The milliseconds of `<ms>-<seq>[-<uid>]`, or None (a digest's id)."""
    head = str(entry_id).partition("-")[0]
    return int(head) if head.isdigit() else None
