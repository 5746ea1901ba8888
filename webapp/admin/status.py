"""The operations facts, gathered once: the admin page renders them and `flask status` prints
them. The listener's connections and lag, the processes, circuit breakers, queues with their
failed jobs, and delivery success rates per channel; `problems` says what is unhealthy."""

import logging
import re
from urllib.parse import urlsplit

from flask import current_app
from redis.exceptions import RedisClusterException
from sqlalchemy.exc import SQLAlchemyError

from webapp import clock, keys
from webapp.admin import jobs, rates
from webapp.config import redis_url_origin
from webapp.core import health, logs
from webapp.core.breaker import CLOSED, OPEN, Breaker
from webapp.core.queues import rq_connection
from webapp.delivery.channels import CHANNELS
from webapp.delivery.dispatch import breaker as delivery_breaker
from webapp.errors import REDIS_FAULTS, passes_by_itself
from webapp.extensions import db, get_redis

BREAKER_PREFIX = keys.breaker("")

log = logging.getLogger(__name__)


def _shown(url):
    """A Redis URL without its password (in the address or as ?password=)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    query = re.sub(r"(^|&)password=[^&]*", r"\1password=***", parts.query)
    netloc = f"***@{host}" if "@" in parts.netloc else host
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def gather(now_ms=None):
    """Every fact the page and the command show, and `problems`: empty when all is well."""
    now_ms = now_ms or clock.now_ms()
    body, _ = health.report(get_redis, now_ms=now_ms)
    facts = {"status": "ok", "redis": body["redis"], "version": body["version"],
             "redis_url": _shown(current_app.config["REDIS_URL"]),
             "redis_url_from": redis_url_origin(current_app.config["REDIS_URL"]),
             "checked_at": clock.ms_to_iso(now_ms), "listener": None, "processes": None,
             "missing": body["missing"], "cluster": body.get("cluster"),
             "cluster_nodes": bool(current_app.config.get("REDIS_CLUSTER_NODES")), "breakers": [],
             "queues": {}, "failed_jobs": [], "deliveries": None, "down": []}
    if body["redis"] == "ok":
        try:
            facts.update(listener=listener(body, now_ms), processes=body["processes"],
                         breakers=breakers(), queues=queues(body["queues"]),
                         failed_jobs=jobs.failed())
        except REDIS_FAULTS:  # went away between the report and these reads
            facts["redis"] = "down"
    if facts["redis"] != "ok" and facts["cluster_nodes"]:
        facts["down"] = which_down()
        if "queues" not in facts["down"]:  # RQ's Redis answers: its facts still show
            try:
                facts.update(queues=queues(health.queue_lengths(rq_connection())),
                             failed_jobs=jobs.failed())
            except REDIS_FAULTS:
                pass
    facts["deliveries"] = deliveries()
    facts["problems"] = problems(facts)
    facts["status"] = "degraded" if facts["problems"] else "ok"
    return facts


def which_down():
    """On a cluster, which of the two failed the report: "cluster" (the data plane) or
    "queues" (REDIS_URL: RQ, the schedules, the sessions). A cluster that lost a master
    still answers a PING (at a node that lives), so while the queues answer, the cluster is
    the one that failed."""
    down = []
    for name, client in (("queues", rq_connection), ("cluster", get_redis)):
        try:
            client().ping()
        except (*REDIS_FAULTS, RedisClusterException):  # a cluster that cannot be made
            down.append(name)
    return down or ["cluster"]


def listener(body, now_ms):
    """The health report's listener, each shard with how long since its last trade; the worst
    of their lags (how late their last ticks were matched) and their newest trade."""
    monitoring = dict(body["monitoring"])
    r = get_redis()
    with r.pipeline(transaction=False) as pipe:
        for shard in monitoring["shards"]:
            pipe.hget(keys.listener_status(shard["shard"]), "last_tick_ms")
        ticks = pipe.execute()
    monitoring["shards"] = [
        # a trade newer than the check (whose reads waited on Redis): no lag, not a negative
        {**shard, "trade_age_ms": max(0, now_ms - int(tick)) if tick and int(tick) else None}
        for shard, tick in zip(monitoring["shards"], ticks, strict=True)]
    ages = [s["trade_age_ms"] for s in monitoring["shards"] if s["trade_age_ms"] is not None]
    monitoring["trade_age_ms"] = min(ages) if ages else None
    lags = [shard["lag_ms"] for shard in monitoring["shards"] if shard["lag_ms"] is not None]
    monitoring["lag_ms"] = max(lags) if lags else None
    monitoring["breaker"] = body["circuit"]
    return monitoring


OURS = ("binance", *(f"delivery-{channel}" for channel in CHANNELS))  # the install's breakers


def breakers():
    """The feed's breaker, each built-in channel's, and any destination's that has failed
    (every delivery writes its breaker: one that never failed is not news)."""
    found = {"binance": Breaker("binance").state()}
    for channel in CHANNELS:
        found[f"delivery-{channel}"] = delivery_breaker(channel).state()
    for key in sorted(get_redis().scan_iter(match=keys.breaker("*"), count=500)):
        name = key[len(BREAKER_PREFIX):]
        if name not in found and name.startswith("delivery-"):
            state = delivery_breaker(name[len("delivery-"):]).state()
            if state["failures"] or state["last_error"] or state["state"] != CLOSED:
                found[name] = state
    for state in found.values():  # closed with no failure counted: its last error is history
        state["recovered"] = state["state"] == CLOSED and not state["failures"]
    return list(found.values())


def queues(lengths):
    """{queue: {waiting, failed}}."""
    failed = jobs.counts()
    return {name: {"waiting": n, "failed": failed.get(name, 0)} for name, n in lengths.items()}


def deliveries():
    """{window: {channel: {slots, rate, finished}}} for the last hour and day, and `waiting`:
    {channel: deliveries due and not out yet}; None if SQL does not answer."""
    now = clock.utcnow()
    try:
        waiting = rates.waiting(now)
        found = {}
        for window in rates.WINDOWS:
            table = rates.success_rates(window, now, [c for c, n in waiting.items() if n])
            found[window.name] = {channel: dict(zip(("rate", "finished"), rates.overall(slots),
                                                    strict=True), slots=slots)
                                  for channel, slots in table.items()}
        found["waiting"] = waiting
        return found
    except SQLAlchemyError as exc:
        db.session.rollback()
        if not passes_by_itself(exc):  # a schema's fault, say: its trace
            log.exception("event=ops_deliveries_failed")
        else:
            logs.event(log, "ops_deliveries_failed", logging.WARNING,
                       error=logs.error_text(exc))
        return None


def problems(facts):
    """What is unhealthy, one sentence each, most serious first."""
    if facts["redis"] != "ok" and facts["cluster_nodes"]:  # the queues' Redis is another
        found = []
        state = (facts["cluster"] or {}).get("state", "unreachable")
        if "cluster" in facts["down"] and state == "unreachable":
            named = ", ".join(f"{h}:{p}" for h, p in current_app.config["REDIS_CLUSTER_NODES"])
            found.append(f"redis cluster: no node answers (REDIS_CLUSTER_NODES {named}, and "
                         "those last seen; the live feed, inboxes and alert index are down)")
        elif "cluster" in facts["down"]:
            found.append(f"redis cluster: not answering in every slot (state {state}; the live "
                         "feed, inboxes and alert index are affected until it fails over)")
        if "queues" in facts["down"]:
            found.append("redis (REDIS_URL): not answering (queues, schedules and sign-ins "
                         "are down)")
        return found or ["redis: not answering"]
    if facts["redis"] != "ok":
        return ["redis: not answering (queues, the live feed and the alert index are down)"]
    found = []
    for shard in facts["listener"]["shards"]:
        if shard["status"] != "ok":
            why = "heartbeat stale" if shard["listener"] != "alive" else "not connected"
            found.append(f"listener shard {shard['shard']}: {shard['state']}, {why}")
    found += [f"process missing: no live {role}" for role in facts["missing"]]
    # a user's destination failing is theirs (shown, not the install's trouble): any user
    # can point one at a host that never answers
    found += [f"breaker open: {b['name']} ({b['last_error'] or 'failing'})"
              for b in facts["breakers"] if b["state"] == OPEN and b["name"] in OURS]
    if (facts["cluster"] or {}).get("state", "ok") != "ok":
        found.append(f"redis cluster: state {facts['cluster']['state']}")
    if facts["deliveries"] is None:
        found.append("database: not answering")
    return found
