"""gunicorn's settings for the web process; gunicorn reads this file from the working directory.

`make run` uses it, and so does a plain `gunicorn wsgi:app` run from the repository.
"""

import gc
import os
import threading
import time

from gunicorn.glogging import Logger

from webapp.core import logs

logs.json_from_the_start(lines=False)  # the arbiter's own failure, with LOG_FORMAT=json
REQUEST_ID = logs.HEADER.lower()

bind = f"127.0.0.1:{os.environ.get('PORT', '8000')}"
worker_class = "gevent"  # live streams are greenlets, handed off to the hub
# Each worker holds its own streams and subscribes only to their users' channels; a browser
# may reconnect to any of them and replay from Last-Event-ID (docs/scaling.md, "Web").
DEFAULT_WORKERS = 2
workers = int(os.environ.get("WEB_CONCURRENCY") or DEFAULT_WORKERS)
worker_connections = 20000
timeout = 60
graceful_timeout = 5
control_socket_disable = True  # gunicorn 27 would otherwise write ~/.gunicorn/gunicorn.ctl
accesslog = "-"
# the path without its query string: /ws?api_key=... must never reach a log
ACCESS_FORMAT = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms'
access_log_format = ACCESS_FORMAT
HOOKS = "/hooks/"
YOUNG_GC_THRESHOLD = 10_000  # objects made (less those freed) between young collections


class AccessLogger(Logger):
    """An inbound webhook's path is its secret: the log keeps its prefix (what the settings
    page shows) and drops the rest."""

    def atoms(self, resp, req, environ, request_time):
        """With our format, only the atoms it names: gunicorn's own add every request and
        response header and environ entry to each line's (docs/performance.md)."""
        if self.cfg.access_log_format != ACCESS_FORMAT:  # an operator's own format
            atoms = super().atoms(resp, req, environ, request_time)
        else:
            sent = getattr(resp, "sent", None)
            atoms = {"h": environ.get("REMOTE_ADDR", "-"), "t": self.now(),
                     "m": environ.get("REQUEST_METHOD"), "U": environ.get("PATH_INFO"),
                     "H": environ.get("SERVER_PROTOCOL"), "s": str(resp.status).split(None, 1)[0],
                     "b": str(sent) if sent is not None else "-",
                     "M": request_time.seconds * 1000 + request_time.microseconds // 1000}
        path = atoms["U"] or ""
        if path.startswith(HOOKS):
            atoms["U"] = path[:len(HOOKS) + 10] + "..."
        return atoms

    def access(self, resp, req, environ, request_time):
        """The access line carries the request id the app answered with."""
        answered = next((value for name, value in resp.headers if name.lower() == REQUEST_ID),
                        None)
        token = logs.bind(answered)
        try:
            super().access(resp, req, environ, request_time)
        finally:
            logs.unbind(token)

    def setup(self, cfg):
        """LOG_FORMAT=json: gunicorn's own lines (its errors, the access log) too."""
        super().setup(cfg)
        if logs.format_name(os.environ) != "json":
            return  # text: gunicorn's usual lines
        for handler in (*self.error_log.handlers, *self.access_log.handlers):
            handler.setFormatter(logs.formatter(os.environ, "web"))


logger_class = AccessLogger


def post_worker_init(worker):
    """Each web worker beats in tb:processes, so /api/v1/health lists it."""
    from webapp.core.processes import Heartbeat
    from webapp.extensions import get_redis

    def data_plane():  # on a cluster, made on first use (None until then)
        with worker.wsgi.app_context():
            return get_redis()

    worker.heartbeat = Heartbeat(data_plane, "web").start()
    threading.Thread(target=_end_streams_on_stop, args=(worker,), name="streams-end",
                     daemon=True).start()
    # the app's INFO lines (`event=hook_received ...`: who sent a webhook what) reach the log
    logs.configure(worker.wsgi.config, "web")
    # The app is loaded: its ~140,000 objects (modules, SQLAlchemy's, Flask's) live as long
    # as the worker, yet every full collection walked them all; a batch of 1000 events spent
    # a quarter of its CPU there. Frozen, the collector leaves them out (docs/performance.md).
    gc.collect()
    gc.freeze()
    # A batch of events makes thousands of objects that live until its answer, and Python's
    # young-generation collection ran every 700 of them to find no garbage: 6 % of a batch's
    # instructions. Freed by reference counting as before, they are now looked over less often.
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


def _end_streams_on_stop(worker, poll_s=0.2):
    """A stopping worker waits for its open requests, and a WebSocket is one until it ends:
    it would hold the worker until the graceful timeout kills it, exit hook and all. Its
    streams end as soon as it is told to stop, and so do any opened while it still accepts
    (gunicorn looks once a second); the browsers reconnect to a live worker."""
    while worker.alive:
        time.sleep(poll_s)  # a greenlet's sleep: the worker is gevent's
    while True:  # until the process ends (a daemon thread)
        hub = worker.wsgi.extensions.get("fanout")
        if hub is not None:
            hub.end_streams()
        time.sleep(poll_s)


def worker_exit(server, worker):
    """The worker leaves the processes' list (else it shows as silent for FORGET_MS), and is
    thawed before its interpreter ends: frozen objects are otherwise finalized after gevent's
    modules are torn down, and logging's handler callbacks print tracebacks."""
    try:
        if getattr(worker, "heartbeat", None) is not None:
            worker.heartbeat.end()
    finally:
        gc.unfreeze()
        gc.collect()


def child_exit(server, worker):
    """A worker's open streams leave /metrics with it (PROMETHEUS_MULTIPROC_DIR's files)."""
    from webapp.core import metrics

    metrics.process_dead(worker.pid)
