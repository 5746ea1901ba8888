"""`flask worker`: RQ workers on the queues, replaced (not lost) when Redis goes away."""

import logging
import signal
import threading
import traceback

import click
from flask import current_app
from flask.cli import with_appcontext
from rq import SimpleWorker
from rq.registry import FailedJobRegistry

from webapp.core import logs
from webapp.core.outage import REDIS_DOWN, Outage
from webapp.core.processes import Heartbeat
from webapp.core.queues import QUEUES, STOPPING, rq_connection
from webapp.delivery import dispatch
from webapp.errors import SQL_FAULTS, passes_by_itself
from webapp.extensions import db, get_redis
from worker.renamed_jobs import rename_waiting_jobs
from worker.schedule import PERIODIC

RESTART_PAUSE_S = 0.5
# RQ takes its scheduler's lock (which re-queues the jobs whose retry waits) when it starts
# and at each maintenance pass, every 10 minutes by default. A worker killed keeps its lock
# for 61 s, so the one started in its place got it 10 minutes later: retries meant to run in
# 1-16 s waited that long (a drill). Every 15 s: at most about 75 s after a kill.
MAINTENANCE_S = 15


@click.command("worker")
@click.argument("queues", nargs=-1, type=click.Choice(QUEUES))
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@with_appcontext
def run_worker(queues, burst):
    """Run an RQ worker on QUEUES (default: high, default, low)."""
    logs.configure(current_app.config, "worker")
    # SimpleWorker runs jobs in this process, inside the app context made once here. RQ's own
    # scheduler (a forked process holding only Redis) re-queues jobs whose retry waits.
    beat = Heartbeat(get_redis(), "worker").start()
    try:
        work_forever(lambda: JobWorker(queues or QUEUES, connection=rq_connection(),
                                       maintenance_interval=MAINTENANCE_S),
                     Outage("worker"), threading.Event(), burst=burst, with_scheduler=True)
    finally:
        beat.end()


def work_forever(make_worker, outage, stop, **work_kwargs):
    """Run RQ workers from `make_worker()` (on `rq_connection()`) until `stop` is set.

    RQ's worker quits on a Redis timeout or on an error while it finishes a job (e.g.
    BusyLoadingError as Redis reloads): we wait for Redis and start a fresh worker instead,
    so one outage costs a pause, never the process. Jobs it was running stay in RQ's
    started registry, which RQ's maintenance moves to failed; deliveries are kept in SQL
    and the sweep retries them, so none is lost.
    """
    r = rq_connection()
    for name in ("rq.worker", "rq.scheduler"):
        logging.getLogger(name).addFilter(_no_redis_traceback)
        logging.getLogger(name).addFilter(_failure_traceback_apart)
        logging.getLogger(name).addFilter(_no_routine_lines)
    renamed = False
    while not stop.is_set():
        if not outage.wait_until_up(r, stop):
            return
        worker = None
        try:
            if not renamed:
                rename_waiting_jobs(r)  # once per process: jobs the previous release queued
                renamed = True
            worker = make_worker()
            worker.work(**work_kwargs)
        except REDIS_DOWN as exc:
            outage.failed(exc)
        # RQ notes the time of a SIGTERM / Ctrl-C; a burst ends when the queues run dry
        if getattr(worker, "_shutdown_requested_date", None) or work_kwargs.get("burst"):
            return
        _catch_stop_signals(stop)  # RQ's handlers belong to the worker that just quit
        stop.wait(RESTART_PAUSE_S)  # RQ quit on its own (it logged why): a fresh worker next


class JobWorker(SimpleWorker):
    """RQ's SimpleWorker, whose lines of a job carry the job's request id, and whose every job
    starts with a fresh database session."""

    def perform_job(self, job, queue):
        try:
            done = super().perform_job(job, queue)
        finally:
            # the jobs share the worker's app context: a job that failed mid-transaction (a
            # locked database at its commit) would leave every job after it failing at once
            db.session.remove()
        if done and job.meta.get("interval"):  # a periodic job (worker/schedule.py) that
            # failed once is one record, run again each interval: working now, it leaves
            # the failed list, where RQ would keep it for a year
            FailedJobRegistry(queue.name, connection=self.connection).remove(
                job, delete_job=False)
        return done

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        STOPPING.clear()  # a worker made again after RQ quit on its own is not stopping

    def handle_warm_shutdown_request(self):
        STOPPING.set()  # the job running now ends at its next step (webapp/core/queues.py)
        super().handle_warm_shutdown_request()

    def handle_exception(self, job, *exc_info):
        """A job that met the database locked or away a moment, and runs again (its retry,
        a periodic job's next run, a delivery's row left queued, which the sweep takes up
        again), is one warning; RQ's line is an ERROR with a trace."""
        exc = exc_info[1]
        if (isinstance(exc, SQL_FAULTS) and passes_by_itself(exc)
                and (job.meta.get("interval") or job.retries_left
                     or _unclaimed_delivery(job, exc_info[2]))):
            logs.event(self.log, "job_waits_for_database", logging.WARNING, job_id=job.id,
                       error=logs.error_text(exc))
            return
        super().handle_exception(job, *exc_info)

    def execute_job(self, job, queue):
        """Every line of the job's run carries its request id, RQ's own ("Job OK", a failure)
        too; RQ's line naming the job it took comes before it has read the job."""
        token = logs.bind(job.meta.get(logs.META_KEY))
        try:
            return super().execute_job(job, queue)
        finally:
            logs.unbind(token)


def _unclaimed_delivery(job, tb):
    """A delivery job that failed to claim its row: the row is still queued, and the sweep
    takes it up again. (One that failed after its provider took the message is not: its row
    is left sending, and may be sent twice.)"""
    return job.id.startswith("delivery-") and any(
        frame.f_code is dispatch._claim.__code__ for frame, _ in traceback.walk_tb(tb))


# RQ's lines with a traceback in the message (rq 2.12): a failed job's, its scheduler's
JOB_FAILED = "Worker %s: job %s: exception raised while executing (%s)\n%s"
REDIS_UNREACHABLE = "Worker %s: could not connect to Redis instance: %s retrying in %d seconds..."
KEPT_FOREVER = "Worker %s: job %s result will never expire, clean up result key manually"
SCHEDULER_FAILED = "Scheduler [PID %s] raised an exception.\n%s"


def _failure_traceback_apart(record):
    """A failure's traceback goes where every other line's goes (JSON: `exc`)."""
    if (record.msg in (JOB_FAILED, SCHEDULER_FAILED) and isinstance(record.args, tuple)
            and record.args and isinstance(record.args[-1], str)):
        *args, record.exc_text = record.args
        record.msg, record.args = record.msg.rsplit("\n", 1)[0], tuple(args)
        record.exc_text = record.exc_text.rstrip("\n")
    return True


# RQ's INFO lines a job run (taken, OK, completed): for a periodic job run every few seconds
# (the listener's watchdog, every 5 s) they were most of a quiet worker's log; its failures
# still show. Its registries' cleaning, each maintenance pass (every 15 s) a queue. And its
# advice to clean a kept result up by hand: only periodic jobs keep theirs for good, as
# rq-scheduler runs them again from it (worker/schedule.py).
FREQUENT_S = 60
FREQUENT = frozenset({p.id for p in PERIODIC if p.interval < FREQUENT_S}
                     | {f"{p.func}()" for p in PERIODIC if p.interval < FREQUENT_S})
ROUTINE = ("Worker %s: cleaning registries for queue: %s", KEPT_FOREVER)


def _no_routine_lines(record):
    if record.levelno != logging.INFO:
        return True
    if record.msg in ROUTINE:
        return False
    return not any(isinstance(arg, str) and arg in FREQUENT for arg in record.args or ())


def _no_redis_traceback(record):
    """RQ logs a traceback, as an ERROR, when Redis goes away under it: our outage line says
    it in one, and the worker waits and comes back by itself (a warning, as the others')."""
    if record.exc_info and isinstance(record.exc_info[1], REDIS_DOWN):
        record.exc_info = record.exc_text = None
        _warning(record)
    elif record.msg == REDIS_UNREACHABLE:
        _warning(record)
    return True


def _warning(record):
    record.levelno, record.levelname = logging.WARNING, "WARNING"


def _catch_stop_signals(stop):
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
