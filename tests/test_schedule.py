"""The periodic jobs stay scheduled for good: their records never expire after a run, and the
running scheduler puts back any that went missing (a flush, a record lost)."""

import threading

from rq.job import Job
from rq_scheduler import Scheduler

from tests.hub import poll, run_jobs
from webapp.core.queues import rq_connection
from worker import schedule
from worker.schedule import PERIODIC, reconcile


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
