"""The periodic jobs stay scheduled for good: their records never expire after a run, and the
running scheduler puts back any that went missing (a flush, a record lost)."""

import threading
import time

from rq.job import Job
from rq_scheduler import Scheduler

from tests.hub import poll, run_jobs
from webapp.admin import jobs
from webapp.core.queues import rq_connection
from worker import schedule
from worker.schedule import PERIODIC, Periodic, reconcile


def test_a_periodic_jobs_record_outlives_its_runs(app):
    """With a TTL its record lapsed when a run waited long in a busy queue (a stuck worker,
    a storm), and rq-scheduler dropped the job without a word: no more safety nets, sweeps
    or watchdog until the scheduler was restarted by hand."""
    with app.app_context():
        scheduler = Scheduler(queue_name="default", connection=rq_connection())
        reconcile(scheduler)
        scheduler.enqueue_jobs()  # every periodic job is due at once on a first start
    run_jobs(app)
    with app.app_context():
        r = rq_connection()
        for spec in PERIODIC:
            assert r.ttl(Job.key_for(spec.id)) == -1, spec.id
        assert sorted(job.id for job in scheduler.get_jobs()) == sorted(p.id for p in PERIODIC)


def test_the_running_scheduler_puts_back_a_job_gone_missing(app):
    with app.app_context():
        scheduler = Scheduler(queue_name="default", connection=rq_connection())
        reconcile(scheduler)
        lost = next(job for job in scheduler.get_jobs() if job.id == "deliveries-sweep")
        scheduler.cancel(lost)
        lost.delete()
        stop = threading.Event()
        loop = threading.Thread(target=schedule._run, args=(scheduler, stop, 0.05, 0.0))
        loop.start()
        try:
            assert poll(lambda: "deliveries-sweep" in {j.id for j in scheduler.get_jobs()})
        finally:
            stop.set()
            loop.join(10)


def flaky():
    """A periodic job's run that fails the first time only."""
    if rq_connection().incr("tb:test:flaky") == 1:
        raise RuntimeError("first run")


def test_a_periodic_job_working_again_leaves_the_failed_list(app):
    """One record run again each interval: once it works, its old failure is not news (RQ
    would list it for a year, with the last success's empty error)."""
    with app.app_context():
        scheduler = Scheduler(queue_name="default", connection=rq_connection())
        reconcile(scheduler, [Periodic("flaky", "tests.test_schedule.flaky", 60)])
        scheduler.enqueue_job(Job.fetch("flaky", connection=rq_connection()))
    run_jobs(app)
    with app.app_context():
        assert [job["id"] for job in jobs.failed()] == ["flaky"]
        scheduler.enqueue_job(Job.fetch("flaky", connection=rq_connection()))  # its next run
    run_jobs(app)
    with app.app_context():
        assert jobs.failed() == [] and jobs.counts()["default"] == 0


def test_a_periodic_job_still_waiting_is_not_queued_again(app):
    """Behind a backlog each interval pushed another copy: the drill found the watchdog 27
    times in `default`, every copy to be run in turn."""
    with app.app_context():
        scheduler = Scheduler(queue_name="default", connection=rq_connection())
        reconcile(scheduler, [Periodic("flaky", "tests.test_schedule.flaky", 60)])
        for _ in range(3):  # three intervals, no worker taking it
            rq_connection().zadd(scheduler.scheduled_jobs_key, {"flaky": time.time() - 1})
            schedule.enqueue_due(scheduler)
        assert rq_connection().lrange("rq:queue:default", 0, -1) == [b"flaky"]
        [(_, due)] = rq_connection().zrange(scheduler.scheduled_jobs_key, 0, -1, withscores=True)
        assert due > time.time() + 50  # due again an interval later


def test_the_listener_watchdog_runs_from_high_and_moves_there_on_restart(app):
    """In `default` it waited behind every delivery of a backlog, minutes late; the copies
    such a backlog left there go with the move."""
    with app.app_context():
        r = rq_connection()
        scheduler = Scheduler(queue_name="default", connection=r)
        reconcile(scheduler, [Periodic("listener-watchdog",
                                       "worker.listener.hosting.listener_watchdog", 5)])
        r.rpush("rq:queue:default", "listener-watchdog", "delivery-1", "listener-watchdog")
        reconcile(scheduler)  # a start after the upgrade
        [watchdog] = [job for job in scheduler.get_jobs() if job.id == "listener-watchdog"]
        assert watchdog.origin == "high"
        assert r.lrange("rq:queue:default", 0, -1) == [b"delivery-1"]
