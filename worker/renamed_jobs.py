"""Jobs queued before the move to feature packages (release 0.2) name their function by its
old dotted path. For one release each worker rewrites those still waiting when it starts;
0.3 deletes this module. The periodic jobs need nothing: the scheduler replaces any whose
path changed when it starts (`worker/schedule.py` `reconcile`)."""

import logging
import zlib

from rq import Queue
from rq.job import Job

from webapp.core import logs
from webapp.core.queues import QUEUES, STREAM_QUEUE

RENAMED = {
    "webapp.router.process_batch": "webapp.notify.router.process_batch",
    "worker.hosting.run_listener": "worker.listener.hosting.run_listener",
    "worker.hosting.listener_watchdog": "worker.listener.hosting.listener_watchdog",
    "webapp.digests.send_due": "webapp.delivery.digests.send_due",
    "webapp.price_history.sample": "webapp.market.price_history.sample",
    "webapp.symbols.refresh_due": "webapp.market.symbols.refresh_due",
}
CHUNK = 500

log = logging.getLogger(__name__)


def rename_waiting_jobs(connection):
    """Point waiting jobs (queued, or scheduled for a retry) at their new paths; how many."""
    renamed = 0
    for name in (*QUEUES, STREAM_QUEUE):
        queue = Queue(name, connection=connection)
        ids = [*queue.get_job_ids(), *queue.scheduled_job_registry.get_job_ids()]
        for start in range(0, len(ids), CHUNK):
            renamed += _rename(connection, ids[start:start + CHUNK])
    if renamed:
        logs.event(log, "jobs_renamed", count=renamed)
    return renamed


def _rename(connection, ids):
    renamed = 0
    for job in Job.fetch_many(ids, connection=connection):
        new = RENAMED.get(job.func_name) if job is not None else None
        if new is None:
            continue
        job.func_name = new
        # only the job's data: its status and timestamps belong to RQ, which may be moving it
        connection.hset(job.key, "data", zlib.compress(job.data))
        renamed += 1
    return renamed
