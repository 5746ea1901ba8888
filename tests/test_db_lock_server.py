"""A write waiting for a database lock, under gunicorn's gevent worker, stalls only itself.

Another connection holds SQLite's write lock (or a PostgreSQL table lock) while a request
waits to write; meanwhile /health, a read of the same table, a notification and a keep-alive
on an open stream all get through, and the write finishes once the lock is released.
"""

import sqlite3
import threading
from contextlib import contextmanager

import psycopg
import pytest
import requests

from tests.conftest import PG_URL
from tests.hub import poll
from tests.live_server import cookie_header, login, serve
from tests.sse_helpers import open_stream
from webapp.accounts import service as accounts
from webapp.extensions import db
from webapp.inbox import service as inbox

PASSWORD = "correct horse"
WAIT = 30  # seconds: the writes must not give up before the test lets them through
WRITERS = 4  # at once, so some open fresh connections while the lock is held


@contextmanager
def sqlite_lock(site):
    holder = sqlite3.connect(site["db_path"], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield lambda: True  # SQLite shows no waiters; the write is sent first all the same
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@contextmanager
def postgres_lock(site):
    with psycopg.connect(PG_URL) as holder, psycopg.connect(PG_URL, autocommit=True) as spy:
        holder.execute("LOCK TABLE alerts IN EXCLUSIVE MODE")  # reads pass, writes wait

        def write_is_waiting():
            waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted"
            return spy.execute(waiting).fetchone()[0] == WRITERS

        yield write_is_waiting
        holder.rollback()


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request, tmp_path):
    if request.param == "postgresql" and not PG_URL:
        pytest.skip("PostgreSQL: TEST_DATABASE_URL is not set")
    db_path = tmp_path / "live.db"
    db_url = PG_URL if request.param == "postgresql" else f"sqlite:///{db_path}"
    env = {"STREAM_KEEPALIVE_S": "0.2", "SQLITE_BUSY_TIMEOUT_MS": str(WAIT * 1000),
           "PG_LOCK_TIMEOUT_MS": str(WAIT * 1000)}
    with serve(tmp_path, env=env, db_url=db_url) as live:
        with live.app.app_context():
            user = accounts.create_user("u@example.com", PASSWORD)
            uid, key = user.id, accounts.create_api_key(user, "live")[1]
            db.session.remove()
        headers = {"X-API-Key": key}
        # the key's first use records it (a write): get that done before any lock is held
        assert requests.get(live.url + "/api/v1/alerts", headers=headers).status_code == 200
        yield {"app": live.app, "server": live.server, "uid": uid, "headers": headers,
               "cookie": cookie_header(login(live.url, "u@example.com", PASSWORD)),
               "db_path": str(db_path), "lock": {"sqlite": sqlite_lock,
                                                 "postgresql": postgres_lock}[request.param]}


def test_a_write_waiting_for_a_lock_stalls_only_itself(site):
    url = site["server"].url
    sock, reader = open_stream(site["server"].port, site["cookie"])
    reader.until(lambda events: any(e.get("event") == "unread" for e in events))
    answers = []
    writers = [threading.Thread(target=lambda: answers.append(requests.post(
        url + "/api/v1/alerts", json={"symbol": "BTCUSDT", "type": "above", "price": 1},
        headers=site["headers"], timeout=WAIT + 10))) for _ in range(WRITERS)]
    try:
        with site["lock"](site) as write_is_waiting:
            for writer in writers:
                writer.start()
            assert poll(write_is_waiting)
            health = requests.get(url + "/api/v1/health", timeout=10)  # 503: no listener here
            assert health.json()["redis"] == "ok" and health.json()["streams"] == 1
            listed = requests.get(url + "/api/v1/alerts", headers=site["headers"], timeout=10)
            assert listed.status_code == 200 and listed.json() == []
            with site["app"].app_context():
                _, eid = inbox.store({"user_id": site["uid"], "type": "PRICE_ALERT",
                                      "title": "meanwhile", "message": "m"})
            events = reader.until(lambda ev: any(e.get("id") == eid for e in ev))
            seen = len(events)
            reader.until(lambda ev: any("comment" in e for e in ev[seen:]))  # a keep-alive
            assert not answers  # all that while the writes waited
        for writer in writers:
            writer.join(WAIT + 10)
    finally:
        sock.close()
    assert [answer.status_code for answer in answers] == [201] * WRITERS
