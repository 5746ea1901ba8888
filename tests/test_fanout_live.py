"""Many web processes: a browser reads on one, reconnects to another with Last-Event-ID, and
gets exactly what it missed; each process subscribes only to the users it serves. On one
Redis (SUBSCRIBE) and on a real Redis Cluster (SSUBSCRIBE)."""

import os
import signal
import socket
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests

from devtools import redisd
from tests.cluster import connect, nodes_setting
from tests.hub import poll
from tests.live_server import ROOT, LiveServer, cookie_header, login
from tests.sse_helpers import open_stream
from webapp import create_app, keys
from webapp.extensions import db
from webapp.inbox import service as inbox

PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Two gunicorn web processes on two ports sharing one Redis and one database."""
    with ExitStack() as cleanup:
        yield cleanup.enter_context(_two_processes(tmp_path_factory.mktemp("two"), cleanup))


@pytest.fixture(scope="module")
def two_processes_on_a_cluster(tmp_path_factory, redis_cluster):
    """The same with the data plane on the session's Redis Cluster."""
    nodes = nodes_setting(redis_cluster)
    with ExitStack() as cleanup:
        yield cleanup.enter_context(_two_processes(
            tmp_path_factory.mktemp("two-cluster"), cleanup,
            {"REDIS_CLUSTER_NODES": nodes}, connect(redis_cluster)))


class _Site:
    def __init__(self, app, servers, data):
        self.app, self.servers, self.data = app, servers, data  # data: the data plane client

    def store(self, uid, title):
        with self.app.app_context():
            return inbox.store({"user_id": uid, "type": "PRICE_ALERT", "title": title})[1]

    def subscribers(self, channel):
        """Processes subscribed to a user's channel (sharded on a cluster)."""
        if hasattr(self.data, "get_node_from_key"):
            node = self.data.get_node_from_key(channel)
            return dict(self.data.pubsub_shardnumsub(channel, target_nodes=node))[channel]
        return dict(self.data.pubsub_numsub(channel))[channel]


class _two_processes:  # noqa: N801 - a context manager used like a function
    def __init__(self, tmp, cleanup, env=None, data=None):
        self.tmp, self.cleanup, self.env, self.data = tmp, cleanup, env or {}, data

    def __enter__(self):
        tmp, cleanup = self.tmp, self.cleanup
        process, redis_url = redisd.start(tmp / "redis", appendonly=False)
        cleanup.callback(redisd.stop, process)
        db_url = f"sqlite:///{tmp / 'site.db'}"
        settings = {"REDIS_URL": redis_url, "SECRET_KEY": "live-secret", "INSTANCE_PATH": str(tmp)}
        config = dict(settings)
        if self.env:
            config["REDIS_CLUSTER_NODES"] = [
                (h, int(p)) for h, p in (n.split(":") for n in self.env["REDIS_CLUSTER_NODES"]
                                         .split(","))]
        app = create_app({"SQLALCHEMY_DATABASE_URI": db_url, **config})
        with app.app_context():
            db.create_all()
        cleanup.callback(_dispose, app)
        env = {"DATABASE_URL": db_url, **settings, **self.env}
        servers = []
        for i in range(2):
            server = LiveServer(env, tmp / f"gunicorn{i}.log").start()
            cleanup.callback(server.close)
            servers.append(server)
        data = self.data or app.extensions["redis"]
        return _Site(app, servers, data)

    def __exit__(self, *exc):
        return False


def _dispose(app):
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def notifications(events):
    return [e["id"] for e in events if e.get("event") == "notification"]


def has_unread(events):
    return any(e.get("event") == "unread" for e in events)


def reconnect_to_the_other_process(site, email):
    """Read on process 1, leave, miss three, come back on process 2 with Last-Event-ID."""
    one, two = site.servers
    with site.app.app_context():
        from webapp.accounts import service as accounts

        uid = accounts.create_user(email, PASSWORD).id
    cookie = cookie_header(login(one.url, email, PASSWORD))
    channel = keys.user_channel(uid)
    assert site.subscribers(channel) == 0  # no page open: nobody listens for this user

    sock, reader = open_stream(one.port, cookie)
    reader.until(has_unread)
    assert site.subscribers(channel) == 1  # process 1 alone
    seen = site.store(uid, "seen on one")
    reader.until(lambda ev: seen in notifications(ev))
    sock.close()
    assert poll(lambda: site.subscribers(channel) == 0, timeout=5)  # let go when it closed

    missed = [site.store(uid, f"missed {i}") for i in range(3)]
    sock, reader = open_stream(two.port, cookie, headers={"Last-Event-ID": seen})
    try:
        events = reader.until(has_unread)
        assert notifications(events) == missed
        assert site.subscribers(channel) == 1  # now process 2 alone
        live = site.store(uid, "live on two")
        events = reader.until(lambda ev: live in notifications(ev))
        assert notifications(events) == [*missed, live]  # each exactly once
    finally:
        sock.close()


def test_a_browser_reconnecting_to_another_process_gets_exactly_what_it_missed(two_processes):
    reconnect_to_the_other_process(two_processes, "roamer@example.com")


def test_the_same_on_a_redis_cluster_with_sharded_pubsub(two_processes_on_a_cluster):
    reconnect_to_the_other_process(two_processes_on_a_cluster, "sharded@example.com")


def _workers(gunicorn):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(gunicorn.pid)],
                         capture_output=True, text=True, check=False).stdout.split()
    return len(out)


@pytest.mark.parametrize(("setting", "expected"), [(None, 2), ("3", 3)])
def test_make_run_starts_web_concurrency_workers(tmp_path, redis_url, setting, expected):
    """gunicorn with gunicorn.conf.py, as `make run` starts it: WEB_CONCURRENCY workers, else 2."""
    env = {k: v for k, v in os.environ.items() if k != "WEB_CONCURRENCY"}
    env.update({"REDIS_URL": redis_url, "INSTANCE_PATH": str(tmp_path),
                "DATABASE_URL": f"sqlite:///{tmp_path / 'site.db'}", **(
                    {"WEB_CONCURRENCY": setting} if setting else {})})
    with socket.socket() as held, open(tmp_path / "gunicorn.log", "wb") as log:
        held.bind(("127.0.0.1", 0))  # held until gunicorn has it: no one else can take it
        port = held.getsockname()[1]
        gunicorn = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "--config",
             str(ROOT / "gunicorn.conf.py"), "--bind", f"fd://{held.fileno()}", "wsgi:app"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, pass_fds=[held.fileno()])
        try:
            assert poll(lambda: _workers(gunicorn) == expected, timeout=30)
            assert poll(lambda: _answers(port), timeout=30)
        finally:
            gunicorn.send_signal(signal.SIGTERM)
            gunicorn.wait(15)


def _answers(port):
    try:
        return requests.get(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=5).ok
    except requests.RequestException:
        return False
