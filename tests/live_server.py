"""The app served for real: gunicorn with the gevent worker, as `make run` serves it."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import requests

from devtools import redisd
from tests.conftest import reset_postgres
from webapp import create_app
from webapp.accounts import service as accounts
from webapp.extensions import db

ROOT = Path(__file__).resolve().parent.parent


CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium reaches for outside hosts at every start.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def launch_chromium(playwright):
    """Debian's Chromium, headless; tests never download a browser."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                      args=CHROMIUM_ARGS)


def skip_without_chromium():
    """Skip the calling test module, loudly, when Debian's Chromium is not installed."""
    if not CHROMIUM.exists():
        pytest.skip("!! /usr/bin/chromium is missing: browser tests SKIPPED "
                    "(run `make browser` or `apt-get install chromium`)", allow_module_level=True)


class LiveServer:
    """`gunicorn --worker-class gevent wsgi:app` with the given environment, on a socket this
    process binds and holds, then hands over (`fd://`): no other process can take the port
    between its choice and gunicorn's start."""

    def __init__(self, env, log_path):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        # one worker unless the test's own env asks for more (not the caller's shell)
        self.workers = str(env.get("WEB_CONCURRENCY") or 1)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.log_path = log_path
        self.process = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=30.0):
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [gunicorn, "--worker-class", "gevent", "--workers", self.workers,
             "--worker-connections", "2000", "--bind", f"fd://{self.socket.fileno()}",
             "--graceful-timeout", "2", "--no-control-socket", "--access-logfile", "-",
             "wsgi:app"],
            cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
            pass_fds=[self.socket.fileno()])
        try:
            self._wait_up(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_up(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited; see {self.log_path}")
            try:
                requests.get(self.url + "/api/v1/openapi.json", timeout=5).close()
                return
            except requests.RequestException:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)

    def worker_pid(self):
        """The gevent worker's pid (the arbiter's only child)."""
        pids = self.worker_pids()
        return pids[0] if pids else None

    def worker_pids(self):
        """The gevent workers' pids, oldest first."""
        out = subprocess.run(["ps", "-o", "pid=", "--sort", "start_time", "--ppid",
                              str(self.process.pid)],
                             capture_output=True, text=True, check=False).stdout.split()
        return [int(pid) for pid in out]

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if getattr(self, "_log", None):
            self._log.close()

    def close(self):
        """Stop, and let go of the port. Until then a restart (`start()`) has the same port:
        a stopped server's port is held, its connections wait in the backlog."""
        self.stop()
        self.socket.close()


def login(base_url, email, password):
    """A requests.Session logged in through the real login form; returns it."""
    session = requests.Session()
    page = session.get(base_url + "/auth/login").text
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    response = session.post(base_url + "/auth/login", allow_redirects=False, data={
        "email": email, "password": password, "csrf_token": token})
    assert response.status_code == 302, response.text[:500]
    return session


def cookie_header(session):
    return "; ".join(f"{c.name}={c.value}" for c in session.cookies)


class LiveSite:
    """A served site, and an app on the same database and Redis for what a test sets up."""

    def __init__(self, app, server, redis):
        self.app, self.server = app, server
        self.redis = redis  # process, dir, url: a test may stop and restart it

    @property
    def url(self):
        return self.server.url

    def user(self, email, password):
        """A new account; returns its id."""
        with self.app.app_context():
            return accounts.create_user(email, password).id


@contextmanager
def serve(tmp, env=None, db_url=None, appendonly=False):
    """A private Redis, a database with its tables and gunicorn on both, under `tmp`.

    `env` adds to the server's settings; a PostgreSQL `db_url` starts from an empty schema.
    """
    db_url = db_url or f"sqlite:///{tmp / 'site.db'}"
    with ExitStack() as cleanup:
        process, redis_url = redisd.start(tmp / "redis", appendonly=appendonly)
        redis = {"process": process, "dir": tmp / "redis", "url": redis_url}
        cleanup.callback(lambda: redisd.stop(redis["process"]))  # the one running now
        settings = {"REDIS_URL": redis_url, "SECRET_KEY": "live-secret", "INSTANCE_PATH": str(tmp)}
        app = create_app({"SQLALCHEMY_DATABASE_URI": db_url, **settings})
        if db_url.startswith("postgresql"):
            reset_postgres(app)
        with app.app_context():
            db.create_all()
        cleanup.callback(_dispose, app)
        server = LiveServer({"DATABASE_URL": db_url, **settings, **(env or {})},
                            tmp / "gunicorn.log").start()
        cleanup.callback(server.close)
        yield LiveSite(app, server, redis)


def _dispose(app):
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    for name in ("redis", "rq_redis"):
        if name in app.extensions:
            app.extensions[name].close()


@pytest.fixture(scope="session")
def live_site(tmp_path_factory):
    """One site for the session: each test makes its own user and touches nothing shared."""
    with serve(tmp_path_factory.mktemp("live-site")) as site:
        yield site


@pytest.fixture(scope="module")
def make_live_site(tmp_path_factory):
    """A site of the module's own, for one that needs other settings (`make(env=...)`), stops
    the server or Redis, counts every stream, or changes what every user sees."""
    with ExitStack() as sites:

        def make(name="live", **options):
            return sites.enter_context(serve(tmp_path_factory.mktemp(name), **options))

        yield make
