"""Hosting the listener: a never-ending RQ job on the `stream` queue, one per shard.

Each shard's job runs under a fixed id and holds the shard's Redis lease, renewed every
second; a second copy waits for the lease instead of running. A periodic watchdog enqueues
a shard's job again when its lease has lapsed and the job is neither queued nor just
starting. One job occupies one `flask listener` process, so killing a process stops one
shard and no other (LISTENER_SHARDS=N wants N of them; `make run` starts N).
"""

import gc
import logging
import signal
import threading
import uuid
from datetime import UTC, datetime

import click
from flask import current_app
from flask.cli import with_appcontext
from rq import SimpleWorker
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus

from webapp import keys
from webapp.alerts import index as alert_index
from webapp.core import logs
from webapp.core.breaker import Breaker
from webapp.core.outage import Outage
from webapp.core.processes import Heartbeat
from webapp.core.queues import STREAM_QUEUE, enqueue, get_queue, rq_connection
from webapp.errors import REDIS_FAULTS
from webapp.extensions import close_data_redis, data_redis, db, get_redis
from worker import slowpath
from worker.listener import shards
from worker.listener.connect_budget import ConnectBudget
from worker.listener.connection import logline
from worker.listener.lease import Lease
from worker.listener.pacing import Backoff
from worker.listener.pool import ListenerPool
from worker.matcher import Matcher
from worker.outbox import DEFAULT_HAND_OFF_QUEUE
from worker.runner import work_forever

JOB_ID = shards.JOB_ID  # shard 0's, the single listener's
SETTLE_BUDGET_S = 1.0  # a starting shard settles what fired before it for this long at most
WATCH_GUARD_S = 10  # one watchdog at a time checks a shard; freed when done, or lapses
STANDBY_TTLS = 3  # with shards, a job whose lease stays held this many TTLs gives up
RQ_HEARTBEAT_S = 60  # SimpleWorker does not heartbeat while its job runs: we do it
# The feed's breaker says the feed is down (/health, `flask status`); the backoff spaces the
# attempts and the budget keeps Binance's limit. Open 30 s, it had a 6 s outage cost 36 s.
FEED_BREAKER_RESET_S = 5.0

log = logging.getLogger(__name__)


def run_listener(shard=0, standby=False):
    """The RQ job (and `flask listener --direct` / `--shard`, `standby`: waiting for the lease
    as long as it takes): take the shard's lease, then listen."""
    app = current_app._get_current_object()
    count = shards.following(app.config)  # unset here: the running listeners', at each job
    if shard >= count:  # queued before LISTENER_SHARDS went down
        logline("shard_retired", shard=shard, shards=count)
        return "retired"
    r = get_redis()
    stop = threading.Event()
    restore = _stop_on_signals(stop)
    ttl_s = app.config["LISTENER_LEASE_TTL_S"]
    lease = Lease(r, key=keys.listener_lease(shard), ttl_s=ttl_s)
    # One listener process per shard: a second job of a shard whose lease stays held (the
    # watchdog re-queued it during an outage) must not hold a process another shard needs.
    # A single listener, or one started by hand, waits as a hot standby, as ever.
    give_up_s = None if standby or count == 1 else STANDBY_TTLS * ttl_s
    try:
        if not lease.wait(stop, give_up_s=give_up_s):
            if stop.is_set():
                return "stopped"
            logline("standby_ended", shard=shard, waited_s=give_up_s)
            return "standby"
        _listen(app, r, lease, stop, shard, count)
    finally:
        restore()
    return "stopped"


def _listen(app, r, lease, stop, shard, count):
    slow = matcher = own = None
    try:
        rebuild_alert_index(r, lease, shard, count)
        slow = start_slowpath(app, stop)
        config = app.config
        backoff = (config["LISTENER_BACKOFF_BASE_S"], config["LISTENER_BACKOFF_MAX_S"])
        # A client of its own with a short timeout: a frozen Redis costs the tick path a
        # second per retry, not the 5 s the pages wait, so the socket keeps being read.
        r = own = data_redis(config, socket_connect_timeout=1, socket_timeout=1,
                             client_name=f"tickerbell-listener-{shard}")
        matcher = Matcher(r, hand_off_queue=DEFAULT_HAND_OFF_QUEUE, late_prices=True)
        pool = ListenerPool(
            r, matcher, config["BINANCE_WS_URL"], lease=lease,
            breaker=Breaker("binance", reset_timeout=FEED_BREAKER_RESET_S, redis=r),
            max_age_s=config["LISTENER_MAX_AGE_S"],
            backoff=lambda: Backoff(*backoff),  # one each: a drop delays only its connection
            attempts=ConnectBudget(r, budget=config["LISTENER_CONNECT_BUDGET"],
                                   window_s=config["LISTENER_CONNECT_WINDOW_S"]),
            shard=shard, shards=count,
            heartbeat_s=min(1.0, config["LISTENER_LEASE_TTL_S"] / 3))  # renew well in time
        # The ~110,000 objects loaded by now live as long as the process, and a full
        # collection walked them all: 30-40 ms with every tick waiting, whenever one came.
        # Frozen, the collector leaves them out: about 1 ms (docs/performance.md).
        gc.collect()
        gc.freeze()
        pool.run(stop)
    finally:
        gc.unfreeze()
        stop.set()
        if matcher is not None:
            matcher.close()
        if slow is not None:
            slow.join(10)
        if own is not None:
            close_data_redis(own)
        lease.release()


def rebuild_alert_index(r, lease=None, shard=0, count=1):
    """SQL is the source of truth: rebuild the index so a Redis wipe loses nothing. A shard
    rebuilds its own symbols: the others' are their shards' (and change with every tick of a
    storm, which made a rebuild of them wait in vain)."""
    # Settle fired alerts in SQL first: a one-shot alert that fired just before a crash is
    # still active there until the slow path runs, and the rebuild would arm it again. The
    # lease is renewed meanwhile: the listener's own renewal starts only once it listens.
    try:
        settled = slowpath.settle(beat=lease.renew if lease is not None else None,
                                  budget_s=SETTLE_BUDGET_S)
        owns = None if count == 1 else (lambda symbol: shards.shard_of(symbol, count) == shard)
        logline("index_rebuilt", alerts=alert_index.rebuild(r, owns=owns), settled=settled)
    except Exception:  # listening on a stale index beats not listening at all
        log.exception("event=index_rebuild_failed")
    finally:
        # the rebuild's read must not stay open while it listens: on PostgreSQL its lock on
        # `alerts` held back a migration or a LOCK TABLE, and every alert query queued
        # behind that
        db.session.remove()


def start_slowpath(app, stop):
    """The slow-path consumer runs beside the listener, in its own thread."""
    with app.app_context():
        return slowpath.start_thread(stop)


def _stop_on_signals(stop):
    """SIGTERM/SIGINT set `stop` first, then reach RQ's own handler (a warm shutdown)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        stop.set()
        before = previous[signum]
        if callable(before) and before is not signal.default_int_handler:
            before(signum, frame)

    for sig in previous:
        signal.signal(sig, handler)

    def restore():
        for sig, before in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, before)

    return restore


SHARDS_SAID_S = 30  # the watchdog runs every 5 s: a count set, then taken down, lapses


def listener_watchdog():
    """Periodic job: each shard's outcome (`running`, `queued`, `starting`, `enqueued`;
    `redis_down` while the data plane does not answer, a failover say),
    comma-separated in shard order; one shard: just its own."""
    config = current_app.config
    said = shards.is_set(config)  # unset here (a second shell's worker): the others' count
    count = shards.following(config)
    outcome = ",".join(watch_shard(shard) for shard in range(count))
    if said:  # an unset count's 1 is no one's word: it would hide a running split
        try:  # after the watch: its master away must not keep any shard unwatched
            get_redis().set(keys.LISTENER_SHARDS, count, ex=SHARDS_SAID_S)
        except REDIS_FAULTS:
            pass
    return outcome


def watch_shard(shard):
    """Enqueue the shard's job unless it runs, waits in its queue, or is starting; `watched`
    when another watchdog is checking it this moment. Watchdogs run in several processes
    (the periodic job, each listener as it starts): two that both found the job gone
    enqueued it twice, and the copy left in the queue held the next listener process that
    started as a standby for 30 s, its own shard deaf meanwhile."""
    guard, token = keys.listener_watch(shard), uuid.uuid4().hex
    if not rq_connection().set(guard, token, nx=True, ex=WATCH_GUARD_S):
        return "watched"
    try:
        return _watch(shard)
    except REDIS_FAULTS:  # the data plane away (a failover): the next run, 5 s on, looks again
        return "redis_down"
    finally:
        if rq_connection().get(guard) in (token, token.encode()):
            rq_connection().delete(guard)


def _watch(shard):
    lease = Lease(get_redis(), key=keys.listener_lease(shard))
    freed = lease.break_if_dead()  # its job died with it: no need to wait
    if freed is None and get_redis().exists(lease.key):
        return "running"
    job_id = shards.job_id(shard)
    job = _fetch_job(job_id)
    status = job.get_status(refresh=False) if job is not None else None
    ttl_s = current_app.config["LISTENER_LEASE_TTL_S"]
    if status == JobStatus.QUEUED and job_id in get_queue(STREAM_QUEUE).job_ids:
        return "queued"
    # queued, yet out of the queue: a worker took it and has not marked it started yet (a
    # copy enqueued then waited behind the running job, holding the next listener 30 s)
    if status == JobStatus.QUEUED and _age_s(job.enqueued_at) < ttl_s:
        return "starting"
    if status == JobStatus.STARTED and freed is None and _age_s(job.started_at) < ttl_s:
        return "starting"
    if job is not None:
        _delete(job)  # finished, failed, or started by a worker that has since died
    queue = get_queue(STREAM_QUEUE)
    queue.connection.lrem(queue.key, 0, job_id)  # a copy left queued would run it twice
    enqueue(run_listener, queue=STREAM_QUEUE, job_id=job_id, timeout=-1, shard=shard)
    logline("listener_enqueued", shard=shard, previous=str(status or "none"))
    return "enqueued"


def _delete(job):
    """Delete the old listener job; another watchdog may have deleted it first."""
    try:
        job.delete()
    except (NoSuchJobError, InvalidJobOperation):
        pass


def _fetch_job(job_id):
    try:
        return Job.fetch(job_id, connection=rq_connection())
    except NoSuchJobError:
        return None


def _age_s(since):
    """Seconds since an RQ job's time (None: just now)."""
    if since is None:
        return 0.0
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return (datetime.now(UTC) - since).total_seconds()


def _keep_rq_heartbeat(current, stop):
    """Tell RQ the busy worker lives, or its maintenance would call the job abandoned."""
    while not stop.wait(RQ_HEARTBEAT_S):
        worker = current.get("worker")
        if worker is None:
            continue
        try:
            job = worker.get_current_job()
            if job is not None and worker.execution is not None:
                worker.maintain_heartbeats(job)
        except Exception:  # a missed heartbeat must not end the thread
            log.exception("event=rq_heartbeat_failed")


@click.command("listener")
@click.option("--direct", is_flag=True,
              help="Run shard 0 (the whole listener when unsharded) here, without RQ.")
@click.option("--shard", type=int, default=None,
              help="Run this shard (0 to LISTENER_SHARDS - 1) here, without RQ.")
@with_appcontext
def listener_command(direct, shard):
    """Host the Binance listener: an RQ worker on the `stream` queue running one shard's job
    (or one shard here, with --direct or --shard)."""
    count = shards.count(current_app.config)
    if direct or shard is not None:
        count = _hand_run_count(count)
    if shard is not None and not 0 <= shard < count:
        raise click.BadParameter(f"LISTENER_SHARDS is {count}: 0 to {count - 1}",
                                 param_hint="--shard")
    logs.configure(current_app.config, "listener")
    beat = Heartbeat(get_redis(), "listener").start()
    try:
        if direct or shard is not None:
            run_listener(shard or 0, standby=True)
            return
        stop, current = threading.Event(), {}
        threading.Thread(target=_keep_rq_heartbeat, args=(current, stop), daemon=True).start()
        work_forever(lambda: _stream_worker(current), Outage("listener"), stop,
                     with_scheduler=False)
    finally:
        beat.end()


def _hand_run_count(mine):
    """A listener run by hand splits the symbols as the running ones do: two counts at once
    would give some symbols two listeners. Unset in this shell, the running count is
    followed; set to another, refused."""
    found = shards.running()
    if found is None or found == mine:
        return mine
    if shards.is_set(current_app.config):
        raise click.UsageError(
            f"LISTENER_SHARDS is {mine} here, but the running listeners split the symbols "
            f"over {found}: set LISTENER_SHARDS={found} here, or restart every listener with "
            "the new count")
    click.echo(f"LISTENER_SHARDS is unset here: following the running listeners' {found}")
    current_app.config["LISTENER_SHARDS"] = found
    return found


def _stream_worker(current):
    """A fresh worker for the `stream` queue, after making sure the listener job is there."""
    logline("watchdog", result=listener_watchdog())
    current["worker"] = SimpleWorker([STREAM_QUEUE], connection=rq_connection())
    return current["worker"]
