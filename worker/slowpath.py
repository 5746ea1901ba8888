"""The slow path: consumer group `slow` on `tb:{fired}`, the SQL side of fired alerts.

Each entry holds the notifications one matcher call fired. At least once, idempotent by
notification id: an entry is acknowledged (and deleted) only after its SQL update and
routing succeeded; stale pending entries are reclaimed.
"""

import logging
import os
import socket
import threading
import time

import redis
from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm.attributes import flag_modified

from webapp import clock, keys
from webapp.alerts import index as alert_index
from webapp.alerts import service as alerts
from webapp.core import logs
from webapp.core.outage import REDIS_DOWN, Outage
from webapp.core.queues import STOPPING
from webapp.errors import passes_by_itself
from webapp.extensions import db, get_redis
from webapp.inbox import service as inbox
from webapp.models import Alert
from webapp.notify import router
from worker.outbox import Outbox

STREAM, DEAD_STREAM = keys.FIRED, keys.FIRED_DEAD
GROUP = "slow"
MAX_DELIVERIES = 10  # an entry that failed this often is parked in DEAD_STREAM
DEFAULT_COUNT = 20  # entries per read; each holds up to one matcher batch
SQL_CHUNK = 500  # ids per IN (...) query
DEFAULT_BLOCK_MS = 1000
DEFAULT_MIN_IDLE_MS = 60_000  # a consumer silent this long with entries is presumed dead
SAFETY_NET_ROUNDS = 50
SWEEP_EVERY_S = 2.0  # batches a matcher left in its outbox (a cluster) are finished this often
# An entry that failed (the database locked) is tried again by the running consumer once it
# has been pending this long, not left for the safety net's minute; longer than an entry
# takes, locked commits' waits included, so one still being handled is not taken twice
RETRY_IDLE_MS = 20_000

log = logging.getLogger(__name__)


def consumer_name():
    return f"{socket.gethostname()}-{os.getpid()}"


def ensure_group(r):
    """Create the group from the stream's start, so entries written before it are seen."""
    try:
        r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _fired_at(fields):
    return clock.ms_to_sql(fields["ts"])


def parse(fields):
    """An entry's fired notifications as (nid, alert_id, user_id, mode) tuples."""
    return [tuple(item.split(":")) for item in fields["items"].split(",") if item]


def _alerts(ids):
    found = {}
    ids = sorted(ids)
    for start in range(0, len(ids), SQL_CHUNK):
        query = select(Alert).where(Alert.id.in_(ids[start:start + SQL_CHUNK]))
        found.update((a.id, a) for a in db.session.scalars(query))
    return found


def record(fields, items):
    """The SQL side of fired alerts: last fired time and price; one-shot ones go inactive.

    Returns the one-shot alert ids and those of them inactive now: made so by this call, or
    by an earlier try that committed and then failed to unindex them (Redis lost after the
    commit), which this retry finishes.
    """
    fired_at, price = _fired_at(fields), float(fields["price"])
    found = _alerts({int(alert_id) for _, alert_id, _, _ in items})
    once, done = {int(alert_id) for _, alert_id, _, mode in items if mode == "once"}, set()
    for _, alert_id, _, mode in items:
        alert = found.get(int(alert_id))
        if alert is None:
            continue  # deleted meanwhile
        if alert.last_fired_at is None or alert.last_fired_at <= fired_at:
            alert.last_fired_at, alert.last_fired_price = fired_at, price
        if mode == "once":
            # written even if SQL already says so: a resume committing meanwhile must not
            # leave it active when the index has it fired
            alert.active = False
            flag_modified(alert, "active")
            done.add(alert.id)
    return once, done


def drop_fired(symbol, once, done):
    """After the commit: the fired one-shot alerts' marks go (see keys.alerts_fired)."""
    alert_index.unindex_many(done)  # also if one was armed again meanwhile: SQL says inactive
    if symbol:  # entries written before 0.2 name none, and their marks are gone with tb:alerts
        alert_index.forget_fired(symbol, once - done)  # retries, deleted alerts


def refresh_ttls(items):
    """Give the notified users' inbox keys their 7-day TTL and trim entries past 7 days.

    The inbox's own writes do both; the matcher's script leaves them to this, off the hot path.
    """
    inbox.trim_many(sorted({user_id for _, _, user_id, _ in items}), ttl_ms=inbox.DEFAULT_TTL_MS)


def handle(r, entries):
    """Record, route and acknowledge entries; a failing one stays pending for a retry."""
    done, handled = [], 0
    for entry_id, fields in entries:
        # the matcher's id for the batch: its delivery jobs carry it on
        bound = logs.bind(logs.tick_id(fields.get("symbol", ""), fields.get("ts", "")))
        try:
            items = parse(fields)
            once, inactive = record(fields, items)
            db.session.commit()
            # only now: a rebuild must never see it active and unmarked
            drop_fired(fields.get("symbol"), once, inactive)
            refresh_ttls(items)
            queued = router.route_fired([(nid, int(uid)) for nid, _, uid, _ in items])
            done.append(entry_id)
            handled += len(items)
            # a tick's id followed from its alerts_fired line to its deliveries passes here
            logs.event(log, "fired_batch_settled", symbol=fields.get("symbol", ""),
                       notifications=len(items), deliveries=len(queued))
        except REDIS_DOWN as exc:  # the rest would fail alike: all stay pending, retried
            db.session.rollback()
            log.warning("slow path: entry %s waits for Redis (%s: %s); it will be retried",
                        entry_id, type(exc).__name__, exc)
            break
        except OperationalError as exc:
            db.session.rollback()
            if not passes_by_itself(exc):  # a schema's fault, say: as any failure
                log.exception("slow path: entry %s failed; it will be retried", entry_id)
                continue
            log.warning("slow path: entry %s waits for the database (%s); it will be retried",
                        entry_id, str(exc.orig)[:200])
            break  # the rest would wait alike: all stay pending
        except Exception:  # one bad entry must not stop the rest; it stays pending
            db.session.rollback()
            log.exception("slow path: entry %s failed; it will be retried", entry_id)
        finally:
            logs.unbind(bound)
    if done:
        with r.pipeline() as pipe:
            pipe.xack(STREAM, GROUP, *done)
            pipe.xdel(STREAM, *done)
            pipe.execute()
    return handled


def drain(consumer, count=DEFAULT_COUNT, block_ms=None):
    """Read up to `count` new entries (waiting `block_ms` if given) and handle them."""
    r = get_redis()
    ensure_group(r)
    reply = r.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=count, block=block_ms)
    entries = reply[0][1] if reply else []
    return handle(r, entries) if entries else 0


def reclaim(consumer, min_idle_ms=DEFAULT_MIN_IDLE_MS, count=DEFAULT_COUNT):
    """Take over entries a dead consumer left pending, and handle them."""
    r = get_redis()
    ensure_group(r)
    _, entries, *_ = r.xautoclaim(STREAM, GROUP, consumer, min_idle_ms, "0-0", count=count)
    entries = [(entry_id, fields) for entry_id, fields in entries if fields]
    return handle(r, entries) if entries else 0


def settle(consumer=None, beat=None, budget_s=None):
    """Handle the entries waiting or pending when this begins, so SQL knows what fired before
    a rebuild, for up to `budget_s` (a starting listener's: it is deaf meanwhile). What fires
    later is left to its usual consumers, and so is what the budget leaves: other listener
    shards may keep firing through a storm, and settling all of it held a starting shard deaf
    for seconds, its lease lapsing. A rebuild arms no fired one-shot alert that SQL has not
    settled yet (its fired mark keeps it out). `beat()` runs between rounds (the listener
    renews its lease)."""
    r = get_redis()
    consumer, settled = consumer or consumer_name(), 0
    deadline = None if budget_s is None else time.monotonic() + budget_s
    Outbox(r).sweep(alert_index.registered())  # batches a dead matcher left
    until = _entry(r.xinfo_stream(STREAM)["last-generated-id"]) if r.exists(STREAM) else None
    while (n := reclaim(consumer, min_idle_ms=0) + drain(consumer)) > 0:
        settled += n
        if beat is not None:
            beat()
        if (until is None or _settled_up_to(r, until)
                or (deadline is not None and time.monotonic() > deadline)):
            break
    return settled


def _entry(entry_id):
    """A stream entry id as a tuple that orders as Redis orders ids."""
    ms, _, seq = str(entry_id).partition("-")
    return int(ms), int(seq or 0)


def _settled_up_to(r, until):
    """Whether every entry up to `until` has been read by the group and none is pending."""
    group = next((g for g in r.xinfo_groups(STREAM) if g["name"] == GROUP), None)
    pending = r.xpending(STREAM, GROUP)
    return (group is not None and _entry(group["last-delivered-id"]) >= until
            and (not pending["pending"] or _entry(pending["min"]) > until))


def bury_poison(max_deliveries=MAX_DELIVERIES):
    """Park entries that keep failing in tb:fired:dead (logged), so retries stay cheap."""
    r = get_redis()
    pending = r.xpending_range(STREAM, GROUP, min="-", max="+", count=DEFAULT_COUNT * 10)
    dead = [p["message_id"] for p in pending if p["times_delivered"] >= max_deliveries]
    for entry_id in dead:
        for _, fields in r.xrange(STREAM, entry_id, entry_id):
            r.xadd(DEAD_STREAM, {**fields, "entry": entry_id})
            log.error("slow path: entry %s failed %d times; parked in %s: %s",
                      entry_id, max_deliveries, DEAD_STREAM, fields)
        r.xack(STREAM, GROUP, entry_id)
        r.xdel(STREAM, entry_id)
    return len(dead)


def safety_net():
    """Periodic job: finish batches a matcher left, reclaim stale entries, drain what is
    waiting, expire due alerts."""
    consumer = "safety-net"
    r = get_redis()
    Outbox(r).sweep(alert_index.registered(r))
    ensure_group(r)
    bury_poison()
    handled = reclaim(consumer)
    for _ in range(SAFETY_NET_ROUNDS):
        if STOPPING.is_set():  # the worker is stopping: the next run goes on
            break
        n = drain(consumer)
        handled += n
        if n == 0:
            break
    expired = alerts.expire_due()
    log.info("slow path safety net: handled=%d expired=%d", handled, expired)
    return {"handled": handled, "expired": expired}


def run_forever(stop_event, app=None, consumer=None, block_ms=DEFAULT_BLOCK_MS,
                retry_idle_ms=RETRY_IDLE_MS):
    """Consume until `stop_event` is set; for a thread in the listener process."""
    app = app or current_app._get_current_object()
    consumer = consumer or consumer_name()
    outage, swept = Outage("slowpath"), 0.0
    with app.app_context():
        outbox = Outbox(get_redis())
        while not stop_event.is_set():
            try:
                if time.monotonic() - swept >= SWEEP_EVERY_S:
                    outbox.sweep(alert_index.registered())
                    reclaim(consumer, min_idle_ms=retry_idle_ms)  # entries that failed
                    swept = time.monotonic()
                drain(consumer, block_ms=block_ms)
                outage.recovered()
            except REDIS_DOWN as exc:
                stop_event.wait(outage.failed(exc))
            except Exception:  # the consumer thread must outlive any one failure
                log.exception("slow path: drain failed; retrying")
                stop_event.wait(1.0)
            finally:
                db.session.remove()


def start_thread(stop_event, consumer=None):
    """Start `run_forever` in a daemon thread bound to the current app."""
    app = current_app._get_current_object()
    thread = threading.Thread(target=run_forever, args=(stop_event, app, consumer),
                              name="slowpath", daemon=True)
    thread.start()
    return thread
