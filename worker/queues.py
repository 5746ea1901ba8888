"""RQ queues: one place for connection, timeouts and TTLs."""

import logging
import signal

from flask import current_app
from redis import Redis
from rq import Queue, Retry

from webapp.outage import REDIS_DOWN

DEFAULT_JOB_TIMEOUT = 60
DEFAULT_RESULT_TTL = 3600
DEFAULT_FAILURE_TTL = 7 * 24 * 3600
QUEUES = ("high", "default", "low")
STREAM_QUEUE = "stream"
RESTART_PAUSE_S = 0.5


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


def enqueue(func, *args, queue="default", job_id=None, timeout=DEFAULT_JOB_TIMEOUT,
            retries=0, **kwargs):
    """Enqueue `func` by reference with our timeouts; retries back off 1, 4, 16 ... s."""
    retry = Retry(max=retries, interval=[4**i for i in range(retries)]) if retries else None
    return get_queue(queue).enqueue(
        func, args=args, kwargs=kwargs, job_id=job_id, job_timeout=timeout,
        result_ttl=DEFAULT_RESULT_TTL, failure_ttl=DEFAULT_FAILURE_TTL, retry=retry,
    )


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
    while not stop.is_set():
        if not outage.wait_until_up(r, stop):
            return
        worker = None
        try:
            worker = make_worker()
            worker.work(**work_kwargs)
        except REDIS_DOWN as exc:
            outage.failed(exc)
        # RQ notes the time of a SIGTERM / Ctrl-C; a burst ends when the queues run dry
        if getattr(worker, "_shutdown_requested_date", None) or work_kwargs.get("burst"):
            return
        _catch_stop_signals(stop)  # RQ's handlers belong to the worker that just quit
        stop.wait(RESTART_PAUSE_S)  # RQ quit on its own (it logged why): a fresh worker next


def _no_redis_traceback(record):
    """RQ logs a traceback when Redis goes away under it; our outage line says it in one."""
    if record.exc_info and isinstance(record.exc_info[1], REDIS_DOWN):
        record.exc_info = record.exc_text = None
    return True


def _catch_stop_signals(stop):
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
