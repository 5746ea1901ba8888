"""RQ queues: one place for connection, timeouts and TTLs. The worker process runs them
(worker/runner.py); the web app and the workers enqueue here."""

import threading
from datetime import UTC, datetime, timedelta

from flask import current_app
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry as RedisRetry
from rq import Queue, Retry
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.utils import utcparse

from webapp.core import logs
from webapp.extensions import HEALTH_TIMEOUT_S

DEFAULT_JOB_TIMEOUT = 60
DEFAULT_RESULT_TTL = 3600
DEFAULT_FAILURE_TTL = 7 * 24 * 3600
QUEUES = ("high", "default", "low")
STREAM_QUEUE = "stream"
WAITING_AT_MOST = timedelta(hours=1)  # a job queued longer ago is taken for lost
# Set once the worker running this process's jobs is asked to stop (Ctrl-C, SIGTERM): a long
# job (a drain, a safety net) ends at its next step and leaves the rest to the next run, so
# the worker stops within `make run`'s grace instead of being killed in the middle of a job.
STOPPING = threading.Event()


def rq_connection():
    """RQ stores pickles, so it needs a connection that does not decode responses."""
    app = current_app._get_current_object()
    conn = app.extensions.get("rq_redis")
    if conn is None:
        conn = Redis.from_url(app.config["REDIS_URL"], socket_connect_timeout=2)
        app.extensions["rq_redis"] = conn
    return conn


def health_rq_connection():
    """RQ's Redis for the health check beside a cluster: every wait gives up after
    HEALTH_TIMEOUT_S, so a frozen REDIS_URL fails a load balancer's probe in about a second
    (rq_connection waits for as long as it is frozen)."""
    app = current_app._get_current_object()
    conn = app.extensions.get("health_rq_redis")
    if conn is None:
        conn = Redis.from_url(app.config["REDIS_URL"], socket_timeout=HEALTH_TIMEOUT_S,
                              socket_connect_timeout=HEALTH_TIMEOUT_S, retry_on_timeout=False,
                              retry=RedisRetry(NoBackoff(), 0))
        app.extensions["health_rq_redis"] = conn
    return conn


def get_queue(name="default"):
    return Queue(name, connection=rq_connection())


def waiting(job_ids):
    """Those of `job_ids` whose job waits in its queue: queued again, it would run twice and
    count twice in the queue's depth (RQ pushes an id each time it is enqueued). RQ's record
    says so (queued, less than WAITING_AT_MOST ago; longer, it is taken for lost): one HMGET
    a job, never a read of a queue, which a backlog can make millions long.

    Except a job a worker took and died with before it started it: RQ moves a job it takes
    to the queue's short intermediate list, and marks it started only after. Its record
    still says queued; RQ's own clean-up finds it only after minutes (a drill's email held
    6.5 minutes and counting)."""
    job_ids = list(job_ids)
    with rq_connection().pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hmget(Job.key_for(job_id), "status", "enqueued_at")
        for name in QUEUES:
            pipe.lrange(get_queue(name).intermediate_queue_key, 0, -1)
        replies = pipe.execute()
    found, taken = replies[:len(job_ids)], {i.decode() for ids in replies[len(job_ids):]
                                            for i in ids}
    since = datetime.now(UTC) - WAITING_AT_MOST
    return {job_id for job_id, (status, at) in zip(job_ids, found, strict=True)
            if status == b"queued" and at and utcparse(at.decode()) > since
            and job_id not in taken}


def forget_failures(job_ids):
    """Take `job_ids` off every queue's failed and intermediate lists: queued again under the
    same id (a delivery the sweep takes up again), the job's earlier failure is no longer
    its fate, and `flask status` and the ops page would list as failed a delivery that went
    out."""
    job_ids = list(job_ids)
    if not job_ids:
        return
    conn = rq_connection()
    with conn.pipeline(transaction=False) as pipe:
        for name in QUEUES:
            pipe.lrange(get_queue(name).intermediate_queue_key, 0, -1)
        taken = dict(zip(QUEUES, pipe.execute(), strict=True))
    with conn.pipeline(transaction=False) as pipe:
        for name in QUEUES:
            pipe.zrem(FailedJobRegistry(name, connection=pipe).key, *job_ids)
            # nor a dead worker's take (a short list): RQ's clean-up would fail it queued again
            for job_id in set(job_ids) & {i.decode() for i in taken[name]}:
                pipe.lrem(get_queue(name).intermediate_queue_key, 0, job_id)
        pipe.execute()


def enqueue(func, *args, queue="default", job_id=None, timeout=DEFAULT_JOB_TIMEOUT,
            retries=0, **kwargs):
    """Enqueue `func` by reference with our timeouts; retries back off 1, 4, 16 ... s.

    The job carries the current request id, so its log lines (and the jobs it queues) share
    it with what queued it."""
    request_id = logs.current()
    retry = Retry(max=retries, interval=[4**i for i in range(retries)]) if retries else None
    return get_queue(queue).enqueue(
        func, args=args, kwargs=kwargs, job_id=job_id, job_timeout=timeout,
        result_ttl=DEFAULT_RESULT_TTL, failure_ttl=DEFAULT_FAILURE_TTL, retry=retry,
        meta={logs.META_KEY: request_id} if request_id else None,
    )
