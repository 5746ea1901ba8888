"""gunicorn's settings for the web process; gunicorn reads this file from the working directory.

`make run` uses it, and so does a plain `gunicorn wsgi:app` run from the repository.
"""

import os

bind = f"127.0.0.1:{os.environ.get('PORT', '8000')}"
worker_class = "gevent"  # live streams are greenlets, handed off to the hub
workers = 1  # more processes work too: each holds its own streams and pub/sub connection
worker_connections = 20000
timeout = 60
graceful_timeout = 5
control_socket_disable = True  # gunicorn 27 would otherwise write ~/.gunicorn/gunicorn.ctl
accesslog = "-"
# the path without its query string: /ws?api_key=... must never reach a log
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms'


def post_worker_init(worker):
    """Each web worker beats in tb:processes, so /api/v1/health lists it."""
    from webapp.core.processes import Heartbeat

    Heartbeat(worker.wsgi.extensions["redis"], "web").start()
