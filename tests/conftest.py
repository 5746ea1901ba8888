import os
import re
import socket

import pytest
import redis
from sqlalchemy import text

from devtools import redisd
from devtools.demo import demo
from devtools.fakefeed import FakeFeed
from webapp import create_app
from webapp.core import commands
from webapp.extensions import db
from worker import cli as worker_cli

PG_URL = os.environ.get("TEST_DATABASE_URL")
# No test reaches Binance: the symbol list stays unknown (every symbol accepted, unverified)
# unless a test stores one or points BINANCE_API_URL at a loopback feed. Processes the
# tests start inherit it.
os.environ["BINANCE_API_URL"] = ""
# One Redis unless a test names a cluster: not a `make run`'s running beside (config.py).
os.environ.setdefault("REDIS_CLUSTER_NODES", "")
# loopback SMTP/HTTP servers for the notification hub; the browser journeys' live site;
# the skip summary, whose PostgreSQL and Chromium skips fail a CI run
pytest_plugins = ["tests.hub", "tests.live_server", "tests.cluster", "tests.skips"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A private redis-server for the whole session, on a free port."""
    process, url = redisd.start(tmp_path_factory.mktemp("redis"), appendonly=False)
    yield {"process": process, "url": url}
    redisd.stop(process)


@pytest.fixture(scope="session")
def redis_url(redis_server):
    return redis_server["url"]


@pytest.fixture
def r(redis_url):
    """A decoding client on the session's Redis, flushed first."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


def pytest_generate_tests(metafunc):
    if "db_url" in metafunc.fixturenames:
        backends = ["sqlite"]
        if metafunc.definition.get_closest_marker("both_databases"):
            backends.append("postgresql")
        metafunc.parametrize("db_backend", backends, indirect=True)


@pytest.fixture
def db_backend(request):
    return getattr(request, "param", "sqlite")


@pytest.fixture
def db_url(db_backend, tmp_path):
    if db_backend == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    if not PG_URL:
        pytest.skip("PostgreSQL: TEST_DATABASE_URL is not set")
    return PG_URL


def reset_postgres(app):
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))


@pytest.fixture
def make_app(db_url, db_backend, redis_url, tmp_path):
    """Build an app on a clean database and a flushed Redis; create tables unless told not."""
    with redis.Redis.from_url(redis_url) as r:
        r.flushall()
    apps = []

    def make(create_tables=True, **config):
        settings = {
            "TESTING": True,
            "SECRET_KEY": "test-secret",
            "SQLALCHEMY_DATABASE_URI": db_url,
            "REDIS_URL": redis_url,
            "REDIS_CLUSTER_NODES": [],  # not a running make run's (config.py)
            "INSTANCE_PATH": str(tmp_path / "instance"),
            **config,
        }
        app = create_app(settings)
        worker_cli.register(app)  # as wsgi.py does: the background processes' commands
        commands.register(app, [demo])
        if db_backend == "postgresql":
            reset_postgres(app)
        if create_tables:
            with app.app_context():
                db.create_all()
        apps.append(app)
        return app

    yield make
    for app in apps:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        for name in ("redis", "rq_redis", "health_redis", "health_rq_redis"):
            if app.extensions.get(name) is not None:  # a cluster's: None until it answered
                app.extensions[name].close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def token(runner):
    """A service token for the events API, made as an operator makes one (flask tokens)."""
    result = runner.invoke(args=["tokens", "create", "order-system"])
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def csrf_token(client, path="/auth/login"):
    """The session's CSRF token, read from the page's meta tag as the browser does."""
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


class AuthActions:
    def __init__(self, client, app):
        self._client = client
        self._app = app

    def create(self, email="trader@example.com", password="correct horse"):
        from webapp.accounts import service as accounts

        with self._app.app_context():
            return accounts.create_user(email, password).id

    def login(self, email="trader@example.com", password="correct horse"):
        token = csrf_token(self._client)
        return self._client.post(
            "/auth/login", data={"email": email, "password": password, "csrf_token": token}
        )

    def logout(self):
        token = csrf_token(self._client, "/dashboard")
        return self._client.post("/auth/logout", data={"csrf_token": token})

    def api_key(self, email="trader@example.com"):
        from webapp.accounts import service as accounts
        from webapp.models import User

        with self._app.app_context():
            user = db.session.scalar(db.select(User).where(User.email == email))
            return accounts.create_api_key(user, "test")[1]


@pytest.fixture
def auth(client, app):
    return AuthActions(client, app)


def pytest_report_header(config):
    if PG_URL:
        return f"PostgreSQL tests: ON ({PG_URL})"
    from tests import skips  # registered by pytest_plugins above; importing it first warns

    if skips.on_ci():
        return "PostgreSQL tests: MISSING, TEST_DATABASE_URL is not set: CI=true fails the run"
    return "PostgreSQL tests: SKIPPED, TEST_DATABASE_URL is not set"


@pytest.fixture
def refused_port():
    """A loopback port where a connection is refused for the whole test: held bound but never
    listening. (A port merely found free could be taken by another process meanwhile.)"""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


@pytest.fixture
def feed():
    """A fake Binance market stream on loopback; the test fails if a listener broke its limits."""
    with FakeFeed() as f:
        yield f
    assert f.violations == [], "the listener broke Binance's limits"
