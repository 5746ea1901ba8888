"""The health report: Redis, the market listener, its circuit breaker, queues, uptime."""

import time

from flask import current_app, has_app_context
from markupsafe import Markup
from rq import Queue

from webapp import clock, keys
from webapp.config import VERSION
from webapp.core import processes
from webapp.core.breaker import Breaker
from webapp.core.queues import QUEUES, STREAM_QUEUE, health_rq_connection
from webapp.errors import REDIS_FAULTS
from webapp.extensions import is_cluster

STARTED = time.monotonic()  # module import is process start for the web workers
DEFAULT_LISTENER_STALE_MS = 10_000  # the listener beats every second
OPEN = "open"


def uptime_s():
    """Whole seconds since the process started: a Python int never wraps."""
    return int(time.monotonic() - STARTED)


def _monitoring(status, now_ms):
    beat = int(status.get("heartbeat") or 0)
    age = now_ms - beat if beat else None
    alive = age is not None and age <= DEFAULT_LISTENER_STALE_MS
    connected = alive and status.get("state") == "connected"
    return {
        "status": "ok" if connected else "down",
        "listener": "alive" if alive else "down",
        "stream": "open" if connected else "closed",
        "state": status.get("state") or "unknown",
        "heartbeat_age_ms": age,
        "streams": int(status.get("streams") or 0),
        "connections": int(status.get("connections") or 0),
        "last_error": status.get("last_error") or None,
        # how late its last batch of ticks was matched (from the trades' time), once any was
        "lag_ms": int(status["lag_ms"]) if status.get("lag_ms") else None,
    }


def _shard_count():
    if not has_app_context():
        return 1
    return max(1, int(current_app.config.get("LISTENER_SHARDS") or 1))


def _listener(r, shards, now_ms):
    """(monitoring, last tick ms): every shard's status, and one summary over them all in
    the fields a single listener always had (ok only when every shard is). Listed are as
    many shards as this process's LISTENER_SHARDS or the listener watchdog's, the more (a
    second shell without the setting); judged, this process's own (a count just lowered
    must not make every web process unhealthy until the watchdog's note lapses)."""
    listed = max(shards, int(r.get(keys.LISTENER_SHARDS) or 1))
    with r.pipeline(transaction=False) as pipe:
        for shard in range(listed):
            pipe.hgetall(keys.listener_status(shard))
        statuses = pipe.execute()
    each = [{"shard": shard, **_monitoring(status, now_ms)}
            for shard, status in enumerate(statuses)]
    ok = all(m["status"] == "ok" for m in each[:shards])
    alive = all(m["listener"] == "alive" for m in each[:shards])
    ages = [m["heartbeat_age_ms"] for m in each]
    summary = {
        "status": "ok" if ok else "down",
        "listener": "alive" if alive else "down",
        "stream": "open" if ok else "closed",
        "state": next((m["state"] for m in each if m["status"] != "ok"), each[0]["state"]),
        "heartbeat_age_ms": None if None in ages else max(ages),
        "streams": sum(m["streams"] for m in each),
        "connections": sum(m["connections"] for m in each),
        "last_error": next((m["last_error"] for m in each if m["last_error"]), None),
        "shards": each,
    }
    last_tick = max(int(status.get("last_tick_ms") or 0) for status in statuses)
    return summary, last_tick


def queue_lengths(r):
    """RQ's queue lengths, read where RQ keeps them: REDIS_URL, also beside a cluster."""
    names = (*QUEUES, STREAM_QUEUE)
    if is_cluster(r):
        r = health_rq_connection()
    with r.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.llen(Queue.redis_queue_namespace_prefix + name)
        return dict(zip(names, pipe.execute(), strict=True))


def _cluster(r):
    """The Redis Cluster as its nodes see it: its state, nodes up of those known, masters."""
    nodes = r.cluster_nodes().values()
    up = [node for node in nodes if "fail" not in node["flags"]]  # also pfail: unreachable
    return {"state": r.cluster_info()["cluster_state"], "nodes": len(nodes), "up": len(up),
            "masters": sum("master" in node["flags"] for node in up)}


def _cluster_as_seen(r):
    """_cluster while the data plane fails (a master lost, its slots not yet taken over): what
    a node still answering says, so an operator sees which; or that none answers."""
    try:
        return _cluster(r)
    except REDIS_FAULTS:
        return {"state": "unreachable"}


def report(r, streams=None, now_ms=None, shards=None):
    """(report, healthy?): degraded if Redis is down, the feed is down (any listener shard),
    the breaker open, or no worker, listener or scheduler process beats. `r` is the data
    plane's client, or a function making it (a cluster's fails while the cluster is down)."""
    now_ms = now_ms or clock.now_ms()
    shards = shards or _shard_count()
    body = {"status": "ok", "redis": "ok", "monitoring": None, "circuit": None,
            "uptime_s": uptime_s(), "version": VERSION, "queues": None,
            "last_tick": None, "streams": streams, "processes": None, "missing": []}
    client = None
    try:
        client = r() if callable(r) else r
        client.ping()
        body["monitoring"], last_tick = _listener(client, shards, now_ms)
        body["circuit"] = Breaker("binance", redis=client).state()
        body["queues"] = queue_lengths(client)
        body["processes"] = processes.report(client, now_ms)
        if is_cluster(client):
            body["cluster"] = _cluster(client)
    except REDIS_FAULTS:  # on a cluster also a slot without a master, mid-failover
        body.update(redis="down", status="degraded")
        if client is not None and is_cluster(client):
            body["cluster"] = _cluster_as_seen(client)
        return body, False
    body["last_tick"] = clock.ms_to_iso(last_tick) if last_tick else None
    body["missing"] = processes.missing(body["processes"])
    healthy = (body["monitoring"]["status"] == "ok" and body["circuit"]["state"] != OPEN
               and not body["missing"] and body.get("cluster", {}).get("state", "ok") == "ok")
    body["status"] = "ok" if healthy else "degraded"
    return body, healthy


def _since(last_tick):
    """" since <time>" of the last price (shown in the user's zone), or nothing."""
    if not last_tick:
        return ""
    return Markup(' since the last price at <time datetime="{0}">{0}</time>').format(last_tick)


def problems(body):
    """What a user should know of a degraded report, in words, most serious first."""
    if body["redis"] != "ok":
        return ["Notifications are unavailable: the notification store is not answering. "
                "Nothing you set up is lost; this page recovers by itself."]
    found = []
    monitoring = body["monitoring"] or {}
    if monitoring.get("status") != "ok" or (body["circuit"] or {}).get("state") == OPEN:
        found.append(Markup(
            "Market feed disconnected{}: prices may be stale and alerts cannot fire until it "
            "reconnects, which it does by itself.").format(_since(body.get("last_tick"))))
    if "worker" in body["missing"]:
        found.append("Email, SMS, push and destination deliveries are paused: no background "
                     "worker is running. They are kept and go out when it is back.")
    if "scheduler" in body["missing"]:
        found.append("Scheduled work (digests, clean-up, the feed watchdog) is paused.")
    return found
