"""The routed notifications' slow steps: batches in a Redis stream per RQ queue, drained by
RQ jobs.

route_many stores notifications in the inbox, then adds their batches to the stream of their
queue in one round trip; on one Redis the inbox's script adds them itself (in_script), in the
round trip that stores them. The batch that finds no drain job waiting sets the queue's kick
flag and queues one; while it waits, later batches only join the stream, so a busy web
process pays an XADD per request instead of an RQ job (a pickle and two transactions). A drain job
(any `flask worker`) reads in a consumer group and acknowledges a batch once its slow steps
ran; they are idempotent by notification id. The safety net (worker/schedule.py, every
minute) drains what a lost kick left and takes over batches a dead drain job left pending.
Nothing here depends on the market listener.
"""

import json
import logging
import time
import uuid

import redis

from webapp import keys
from webapp.core import jsontext, logs
from webapp.core.queues import STOPPING, enqueue
from webapp.extensions import get_redis
from webapp.notify import steps
from webapp.notify import types as notification_types

GROUP = "slow-steps"
QUEUES = ("high", "default")  # critical notifications' batches go to "high"
DEFAULT_BATCH = 100  # notifications per batch
DEFAULT_COUNT = 20  # batches per read
KICK_TTL_S = 60  # a kick whose job never got queued (its web process died) lapses
DEFAULT_MIN_IDLE_MS = 60_000  # a drain job silent this long with batches is presumed dead
MAX_DELIVERIES = 5  # a batch that failed this often is parked in keys.ROUTED_DEAD
# A drain job stops reading after this long and queues the next to go on: well inside the
# job timeout (DEFAULT_JOB_TIMEOUT, 60 s), which would cut a batch off mid-way and leave it
# pending for the safety net's minute; and no busy stream holds a worker for good.
DRAIN_BUDGET_S = 20.0

log = logging.getLogger(__name__)


def queue_of(batch):
    return "high" if any(notification_types.is_critical(n) for n in batch) else "default"


def add(batches):
    """Put batches of stored notifications in their queues' streams, and queue a drain job
    for a queue that has none waiting; one round trip (plus an RQ job per kicked queue)."""
    queues = [queue_of(batch) for batch in batches]
    wanted = sorted(set(queues))
    request_id = logs.current() or ""  # the drain logs each batch under its own request's id
    with get_redis().pipeline(transaction=False) as pipe:
        for name, batch in zip(queues, batches, strict=True):
            pipe.xadd(keys.routed(name), {"batch": jsontext.dumps(batch),
                                          "request_id": request_id})
        for name in wanted:
            pipe.set(keys.routed_kick(name), "1", nx=True, ex=KICK_TTL_S)
        kicked = pipe.execute()[len(batches):]
    for name, kick in zip(wanted, kicked, strict=True):
        if kick:
            enqueue(drain, name, queue=name)


def in_script(notifications):
    """(queue, keys, args) with which the inbox's script adds these notifications' batches
    to their queue's stream itself, in the round trip that stores them (one Redis only:
    inbox.store_many's `route`; the kick flag is set there too, kick() queues the jobs)."""
    name = queue_of(notifications)
    return name, [keys.routed(name), keys.routed_kick(name)], [
        logs.current() or "", DEFAULT_BATCH, KICK_TTL_S]


def kick(names):
    """Queue a drain job for each queue whose kick flag the caller set."""
    for name in sorted(names):
        enqueue(drain, name, queue=name)


def ensure_group(r, name):
    """The group reads the stream from its start, so batches added before it are seen."""
    try:
        r.xgroup_create(keys.routed(name), GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def drain(name="default", consumer=None, budget_s=DRAIN_BUDGET_S):
    """RQ job: run the slow steps of the batches waiting in the queue's stream, for at most
    `budget_s`, or until the worker is asked to stop (then the next job goes on with the
    rest)."""
    r, consumer = get_redis(), consumer or f"drain-{uuid.uuid4().hex[:12]}"
    r.delete(keys.routed_kick(name))  # before reading: a batch added after this kicks again
    ensure_group(r, name)
    handled, until = 0, time.monotonic() + budget_s
    while not STOPPING.is_set():
        reply = r.xreadgroup(GROUP, consumer, {keys.routed(name): ">"}, count=DEFAULT_COUNT)
        entries = reply[0][1] if reply else []
        if not entries:
            return handled
        handled += handle(r, name, entries)
        if time.monotonic() >= until:
            break
    # the next goes on (a kick's job may also be waiting: two drains share the group)
    r.set(keys.routed_kick(name), "1", ex=KICK_TTL_S)
    enqueue(drain, name, queue=name)
    return handled


def handle(r, name, entries):
    """Run each batch's slow steps; acknowledge (and delete) the ones that all went through.
    A failed batch stays pending: the safety net retries it, its done steps are skipped."""
    done, handled = [], 0
    for n, (entry_id, fields) in enumerate(entries):
        if STOPPING.is_set():
            _hand_back(r, name, entries[n:])
            break
        bound = logs.bind(fields.get("request_id") or logs.current())
        try:
            batch = json.loads(fields["batch"])
            queued = steps.process_batch(batch)
            done.append(entry_id)
            handled += 1
            # a request id followed from its POST to its deliveries passes here
            logs.event(log, "batch_routed", queue=name, notifications=len(batch),
                       deliveries=sum(map(len, queued)))
        except Exception:  # logged by process_batch; one bad batch must not stop the rest
            log.warning("slow steps: batch %s of %s failed; it will be retried", entry_id, name)
        finally:
            logs.unbind(bound)
    if done:
        with r.pipeline(transaction=False) as pipe:
            pipe.xack(keys.routed(name), GROUP, *done)
            pipe.xdel(keys.routed(name), *done)
            pipe.execute()
    return handled


def _hand_back(r, name, entries):
    """Batches read but not run, the worker stopping: added again as new entries, in one
    step with their removal, so the next start's drain reads them (left pending, they waited
    for the safety net's idle minute). Run twice by a crash between, their steps are
    idempotent."""
    stream = keys.routed(name)
    with r.pipeline(transaction=True) as pipe:
        for _, fields in entries:
            pipe.xadd(stream, fields)
        ids = [entry_id for entry_id, _ in entries]
        pipe.xack(stream, GROUP, *ids)
        pipe.xdel(stream, *ids)
        pipe.execute()


def reclaim(name, consumer, min_idle_ms=DEFAULT_MIN_IDLE_MS):
    """Take over batches a dead or failed drain left pending (parking the hopeless ones)."""
    r, stream = get_redis(), keys.routed(name)
    ensure_group(r, name)
    pending = r.xpending_range(stream, GROUP, min="-", max="+", count=DEFAULT_COUNT * 10,
                               idle=min_idle_ms)
    for dead in [p["message_id"] for p in pending if p["times_delivered"] >= MAX_DELIVERIES]:
        for _, fields in r.xrange(stream, dead, dead):
            r.xadd(keys.ROUTED_DEAD, {**fields, "entry": dead, "queue": name})
            log.error("slow steps: batch %s of %s failed %d times; parked in %s",
                      dead, name, MAX_DELIVERIES, keys.ROUTED_DEAD)
        r.xack(stream, GROUP, dead)
        r.xdel(stream, dead)
    _, entries, *_ = r.xautoclaim(stream, GROUP, consumer, min_idle_ms, "0-0",
                                  count=DEFAULT_COUNT)
    entries = [(entry_id, fields) for entry_id, fields in entries if fields]
    return handle(r, name, entries) if entries else 0


def safety_net(min_idle_ms=DEFAULT_MIN_IDLE_MS):
    """Periodic job: batches of stale drains, then whatever waits with no drain job queued."""
    consumer, handled = "safety-net", 0
    for name in QUEUES:
        if STOPPING.is_set():  # the worker is stopping: the next run goes on
            break
        handled += reclaim(name, consumer, min_idle_ms) + drain(name, consumer)
    if handled:
        log.info("slow steps safety net: handled=%d batches", handled)
    return handled
