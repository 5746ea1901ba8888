"""gunicorn's settings for the web process; gunicorn reads this file from the working directory.

`make run` uses it, and so does a plain `gunicorn wsgi:app` run from the repository.
"""

import logging
import os

from gunicorn.glogging import Logger

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
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms'


class AccessLogger(Logger):
    """An inbound webhook's path is its secret: the log keeps its prefix (what the settings
    page shows) and drops the rest."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        path = atoms["U"] or ""
        if path.startswith("/hooks/"):
            atoms["U"] = path[:len("/hooks/") + 10] + "..."
        return atoms


logger_class = AccessLogger


def post_worker_init(worker):
    """Each web worker beats in tb:processes, so /api/v1/health lists it."""
    from webapp.core.processes import Heartbeat

    Heartbeat(worker.wsgi.extensions["redis"], "web").start()
    _app_events_to_stderr()


def child_exit(server, worker):
    """A worker's open streams leave /metrics with it (PROMETHEUS_MULTIPROC_DIR's files)."""
    from webapp.core import metrics

    metrics.process_dead(worker.pid)


def _app_events_to_stderr():
    """The app's INFO lines (`event=hook_received ...`: who sent a webhook what) reach the
    log; without this only warnings would."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    app_log = logging.getLogger("webapp")
    app_log.setLevel(logging.INFO)
    app_log.addHandler(handler)
