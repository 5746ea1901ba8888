"""RQ queues: one place for connection, timeouts and TTLs. The worker process runs them
(worker/runner.py); the web app and the workers enqueue here."""

from flask import current_app
from redis import Redis
from rq import Queue, Retry

from webapp.core import logs

DEFAULT_JOB_TIMEOUT = 60
DEFAULT_RESULT_TTL = 3600
DEFAULT_FAILURE_TTL = 7 * 24 * 3600
QUEUES = ("high", "default", "low")
STREAM_QUEUE = "stream"


def rq_connection():
    """RQ stores pickles, so it needs a connection that does not decode responses."""
    app = current_app._get_current_object()
    conn = app.extensions.get("rq_redis")
    if conn is None:
        conn = Redis.from_url(app.config["REDIS_URL"], socket_connect_timeout=2)
        app.extensions["rq_redis"] = conn
    return conn


def get_queue(name="default"):
    return Queue(name, connection=rq_connection())


def waiting(job_ids, queues=QUEUES):
    """Those of `job_ids` waiting in one of `queues`: queued again, such a job would run twice
    and count twice in the queue's depth (RQ pushes an id each time it is enqueued)."""
    job_ids = set(job_ids)
    if not job_ids:
        return set()
    with rq_connection().pipeline(transaction=False) as pipe:
        for name in queues:
            pipe.lrange(get_queue(name).key, 0, -1)
        listed = pipe.execute()
    return job_ids & {job_id.decode() for ids in listed for job_id in ids}


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
