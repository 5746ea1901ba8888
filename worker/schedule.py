"""Periodic jobs: one declarative list with stable ids, reconciled when the scheduler starts."""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import click
from flask.cli import with_appcontext
from rq_scheduler import Scheduler

from webapp.extensions import get_redis
from worker.queues import rq_connection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Periodic:
    id: str
    func: str  # dotted path, resolved by RQ when the job runs
    interval: int  # seconds
    queue: str = "default"
    timeout: int = 300


# Later work adds its jobs here; ids never change, so restarts never duplicate.
PERIODIC = [
    Periodic("listener-watchdog", "worker.hosting.listener_watchdog", 5),
    Periodic("slowpath-safety-net", "worker.slowpath.safety_net", 60),
    Periodic("deliveries-sweep", "webapp.delivery.sweep.sweep", 30),
    Periodic("digests-send-due", "webapp.digests.send_due", 900, queue="low"),
    Periodic("prices-sample", "webapp.price_history.sample", 900, queue="low"),
    Periodic("cleanup", "worker.jobs.cleanup", 3600, queue="low"),
]


def reconcile(scheduler, periodic=None):
    """Make the scheduled jobs exactly the declared list: add missing, drop stale."""
    periodic = PERIODIC if periodic is None else periodic
    wanted = {p.id: p for p in periodic}
    for job in scheduler.get_jobs():
        spec = wanted.get(job.id)
        if spec is None or job.meta.get("interval") != spec.interval or job.func_name != spec.func:
            scheduler.cancel(job)
            job.delete()
    present = {job.id for job in scheduler.get_jobs()}
    for spec in periodic:
        if spec.id in present:
            continue
        scheduler.schedule(
            scheduled_time=datetime.now(UTC), func=spec.func, interval=spec.interval,
            repeat=None, id=spec.id, queue_name=spec.queue, timeout=spec.timeout,
            meta={"interval": spec.interval}, result_ttl=spec.interval * 2,
        )
    return sorted(job.id for job in scheduler.get_jobs())


@click.command("scheduler")
@click.option("--interval", default=1.0, help="Seconds between checks for due jobs.")
@with_appcontext
def run_scheduler(interval):
    """Run rq-scheduler after reconciling the periodic jobs."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    get_redis().ping()
    scheduler = Scheduler(queue_name="default", connection=rq_connection(), interval=interval)
    log.info("scheduled jobs: %s", ", ".join(reconcile(scheduler)) or "none")
    scheduler.run()
