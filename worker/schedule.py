"""Periodic jobs: one declarative list with stable ids, reconciled when the scheduler starts."""

import logging
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import click
from flask import current_app
from flask.cli import with_appcontext
from rq_scheduler import Scheduler

from webapp.core import logs
from webapp.core.outage import REDIS_DOWN, Outage
from webapp.core.processes import Heartbeat
from webapp.core.queues import rq_connection
from webapp.extensions import get_redis

log = logging.getLogger(__name__)
RECHECK_S = 60.0  # how often the running scheduler checks that every declared job is there


@dataclass(frozen=True)
class Periodic:
    id: str
    func: str  # dotted path, resolved by RQ when the job runs
    interval: int  # seconds
    queue: str = "default"
    timeout: int = 300


# Later work adds its jobs here; ids never change, so restarts never duplicate.
PERIODIC = [
    # `high`: behind a backlog of deliveries in `default` it ran minutes late
    Periodic("listener-watchdog", "worker.listener.hosting.listener_watchdog", 5, queue="high"),
    Periodic("slowpath-safety-net", "worker.slowpath.safety_net", 60),
    Periodic("slowsteps-safety-net", "webapp.notify.slowsteps.safety_net", 60, queue="high"),
    Periodic("deliveries-sweep", "webapp.delivery.sweep.sweep", 30),
    Periodic("insist-run-due", "webapp.insist.service.run_due", 30, queue="high"),
    Periodic("digests-send-due", "webapp.delivery.digests.send_due", 900, queue="low"),
    Periodic("statements-send-due", "webapp.delivery.statements.send_due", 900, queue="low"),
    Periodic("prices-sample", "webapp.market.price_history.sample", 900, queue="low"),
    Periodic("cleanup", "worker.jobs.cleanup", 3600, queue="low"),
    # checks every 5 min, fetches when the list is missing, a day old or wanted after a miss
    Periodic("symbols-refresh", "webapp.market.symbols.refresh_due", 300, queue="low", timeout=60),
]


def enqueue_due(scheduler):
    """rq-scheduler's enqueue_jobs, but a periodic job whose last run still waits in its queue
    is not queued again, and is due an interval later: behind a backlog each interval pushed
    another copy (the drill found the watchdog 27 times in `default`), and every copy ran."""
    for job in scheduler.get_jobs_to_queue():
        interval = job.meta.get("interval")
        queue = scheduler.get_queue_for_job(job)
        # the newest copy is the nearest the queue's end: looked for from there
        if interval and scheduler.connection.lpos(queue.key, job.id, rank=-1) is not None:
            scheduler.connection.zadd(scheduler.scheduled_jobs_key,
                                      {job.id: time.time() + int(interval)})
        else:
            scheduler.enqueue_job(job)


def reconcile(scheduler, periodic=None):
    """Make the scheduled jobs exactly the declared list: add missing, drop stale.

    A periodic job's record is the one rq-scheduler reschedules each time, so it must never
    expire (result_ttl -1, rq-scheduler's own default): with a TTL it lapsed when a run
    waited in a busy queue, and rq-scheduler dropped the job for good without a word.
    """
    periodic = PERIODIC if periodic is None else periodic
    wanted = {p.id: p for p in periodic}
    for job in scheduler.get_jobs():
        spec = wanted.get(job.id)
        if (spec is None or job.meta.get("interval") != spec.interval
                or job.func_name != spec.func or job.result_ttl != -1
                or job.origin != spec.queue):
            scheduler.cancel(job)
            # every copy left waiting in its queue (job.delete takes one out)
            scheduler.connection.lrem(scheduler.get_queue_for_job(job).key, 0, job.id)
            job.delete()
    present = {job.id for job in scheduler.get_jobs()}
    for spec in periodic:
        if spec.id in present:
            continue
        scheduler.schedule(
            scheduled_time=datetime.now(UTC), func=spec.func, interval=spec.interval,
            repeat=None, id=spec.id, queue_name=spec.queue, timeout=spec.timeout,
            meta={"interval": spec.interval}, result_ttl=-1,
        )
    return sorted(job.id for job in scheduler.get_jobs())


@click.command("scheduler")
@click.option("--interval", default=1.0, help="Seconds between checks for due jobs.")
@with_appcontext
def run_scheduler(interval):
    """Run rq-scheduler after reconciling the periodic jobs; rides out Redis outages."""
    logs.configure(current_app.config, "scheduler")
    stop, outage, previous = threading.Event(), Outage("scheduler"), None
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    beat = Heartbeat(get_redis(), "scheduler").start()
    try:
        while outage.wait_until_up(rq_connection(), stop):
            if previous is not None:
                _retire(previous)
            previous = scheduler = Scheduler(
                queue_name="default", connection=rq_connection(), interval=interval,
                name=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
            try:
                scheduler.register_birth()
                log.info("scheduled jobs: %s", ", ".join(reconcile(scheduler)) or "none")
                _run(scheduler, stop, interval)
            except REDIS_DOWN as exc:
                outage.failed(exc)
        _retire(previous)
    finally:
        beat.end()


def _run(scheduler, stop, interval, check_s=RECHECK_S):
    """rq-scheduler's loop, with our stop event: move due jobs to their queues each interval,
    and every `check_s` put back any declared job that went missing."""
    recheck = time.monotonic() + check_s
    while not stop.is_set():
        scheduler.heartbeat()
        if scheduler.acquire_lock():
            try:
                if time.monotonic() >= recheck:
                    _restore(scheduler)
                    recheck = time.monotonic() + check_s
                enqueue_due(scheduler)
            finally:
                scheduler.remove_lock()
        stop.wait(interval)


def _restore(scheduler):
    had = {job.id for job in scheduler.get_jobs()}
    back = sorted(set(reconcile(scheduler)) - had)
    if back:  # a record gone (a flush, an old TTL): logged, as the runs it missed are lost
        logs.event(log, "periodic_restored", logging.WARNING, jobs=",".join(back))


def _retire(scheduler):
    """Free the lock a scheduler cut off by an outage still holds, and record its death.

    Left alone, the lock would make the next scheduler skip its runs (the listener
    watchdog among them) until it expired.
    """
    if scheduler is None:
        return
    try:
        scheduler.remove_lock()
        scheduler.register_death()
    except REDIS_DOWN:
        pass
