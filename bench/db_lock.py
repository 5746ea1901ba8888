"""An 8 s database write lock against the live feed: /health, keep-alives and a notification.

A private Redis and gunicorn (one gevent worker) on SQLite, or on PostgreSQL with --pg URL.
Two users hold SSE streams: one receives a notification every 0.5 s (stored in Redis by this
process; its delay is store -> arrival), the other only keep-alives (STREAM_KEEPALIVE_S=1,
so the gap between two should be 1000 ms). A prober GETs /health every 50 ms, and writers
POST alerts back to back. Each phase runs --hold seconds: first with no lock (the floor),
then while another connection holds the write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL:
LOCK TABLE alerts IN EXCLUSIVE MODE): the writers wait for it and answer 503 after the
busy/lock timeout. --root runs another checkout's web process (e.g. an older commit).

    python bench/db_lock.py [--hold 8] [--writers 4] [--pg postgresql://...] [--root DIR]
"""

import argparse
import itertools
import re
import socket
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import requests
import sse_common as common  # puts the project on sys.path
from sse_common import percentile

from tests.live_server import cookie_header, login  # noqa: E402
from webapp import create_app
from webapp.accounts import service as accounts
from webapp.extensions import db  # noqa: E402
from webapp.inbox import service as inbox  # noqa: E402

PASSWORD = "correct horse"
KEEPALIVE_S = 1.0
PROBE_EVERY_S = 0.05
NOTIFY_EVERY_S = 0.5
WRITE_EVERY_S = 0.1  # per writer
TIMEOUT_MS = 2000  # SQLITE_BUSY_TIMEOUT_MS and PG_LOCK_TIMEOUT_MS, the defaults


class Stream(threading.Thread):
    """A raw SSE client: when each keep-alive and each `bench-<n>` notification arrived."""

    def __init__(self, port, cookie):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(f"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n"
                          "Accept: text/event-stream\r\n\r\n".encode())
        self.keepalives, self.arrivals, self.ready = [], {}, threading.Event()

    def run(self):
        buffer = b""
        while data := self.sock.recv(65536):
            now = time.perf_counter()
            buffer += data
            *blocks, buffer = buffer.split(b"\n\n")
            for block in blocks:
                if b"event: unread" in block:
                    self.ready.set()
                if b": keepalive" in block:
                    self.keepalives.append(now)
                for n in re.findall(rb"bench-(\d+)", block):
                    self.arrivals.setdefault(int(n), now)


def run_phase(site, hold_s, lock):
    """Probe, write and notify for hold_s seconds (under `lock`); return the figures."""
    stop, health, writes, sent = threading.Event(), [], Counter(), {}

    def probe():
        while not stop.is_set():
            t0 = time.perf_counter()
            requests.get(site["url"] + "/api/v1/health", timeout=60)
            health.append((time.perf_counter() - t0) * 1000)
            time.sleep(PROBE_EVERY_S)

    def write():
        body = {"symbol": "BTCUSDT", "type": "above", "price": 10**6}
        while not stop.is_set():
            try:
                writes[requests.post(site["url"] + "/api/v1/alerts", json=body,
                                     headers=site["headers"], timeout=60).status_code] += 1
            except requests.RequestException as exc:
                writes[type(exc).__name__] += 1
            time.sleep(WRITE_EVERY_S)

    def notify():
        with site["app"].app_context():
            while not stop.is_set():
                n = next(site["numbers"])
                sent[n] = time.perf_counter()
                inbox.store({"user_id": site["uid"], "type": "PRICE_ALERT",
                             "title": f"bench-{n}", "message": "m"})
                time.sleep(NOTIFY_EVERY_S)

    idle, busy = site["streams"]
    first_beat = len(idle.keepalives)
    threads = [threading.Thread(target=f) for f in [probe, notify] + [write] * site["writers"]]
    with lock:
        for thread in threads:
            thread.start()
        time.sleep(hold_s)
        stop.set()
    for thread in threads:  # released first: a write may still wait for it
        thread.join()
    time.sleep(2 * KEEPALIVE_S)  # the last notification and keep-alive arrive
    beats = idle.keepalives[first_beat:]
    return {
        "/health latency": health,
        "keep-alive gap": [(b - a) * 1000 for a, b in zip(beats, beats[1:], strict=False)],
        "notification delay": [(busy.arrivals[n] - t) * 1000 for n, t in sent.items()
                               if n in busy.arrivals],
        "lost": len([n for n in sent if n not in busy.arrivals]), "writes": writes,
    }


@contextmanager
def sqlite_lock(path):
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@contextmanager
def postgres_lock(url):
    import psycopg

    with psycopg.connect(url) as holder:
        holder.execute("LOCK TABLE alerts IN EXCLUSIVE MODE")
        yield
        holder.rollback()


@contextmanager
def no_lock():
    yield


def setup(db_url, redis_url, tmp):
    """Schema, two users (password PASSWORD) and an API key; returns (app, uid, headers)."""
    app = create_app({"SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": redis_url,
                      "SECRET_KEY": common.SECRET, "INSTANCE_PATH": str(tmp)})
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as conn:
                conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        db.create_all()
        users = [accounts.create_user(f"u{i}@bench.example", PASSWORD) for i in (0, 1)]
        key = accounts.create_api_key(users[0], "bench")[1]
        uid = users[0].id
        db.session.remove()
    return app, uid, {"X-API-Key": key}


def row(name, floor, locked):
    def cells(values):
        if not values:
            return f"{'-':>8}{'-':>8}{'-':>8}{0:>6}"
        ordered = sorted(values)
        return (f"{statistics.median(ordered):>8.1f}{percentile(ordered, 99):>8.1f}"
                f"{ordered[-1]:>8.1f}{len(ordered):>6}")
    return f"{name + ' (ms)':<26}{cells(floor[name])}   {cells(locked[name])}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hold", type=float, default=8.0)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--pg", help="a PostgreSQL URL (its public schema is dropped)")
    parser.add_argument("--root", type=Path, default=common.ROOT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_name:
        floor, locked = run(args, Path(tmp_name))
    print(f"db_lock: {'postgresql' if args.pg else 'sqlite'}, {args.hold:g} s phases, "
          f"{args.writers} writers, keep-alive every {KEEPALIVE_S:g} s, lock timeout "
          f"{TIMEOUT_MS} ms, web process from {args.root}")
    head = f"{'median':>8}{'p99':>8}{'max':>8}{'n':>6}"
    print(f"{'':<26}{'floor (no lock)':<30}   {f'{args.hold:g} s write lock held':<30}")
    print(f"{'':<26}{head}   {head}")
    for name in ("/health latency", "keep-alive gap", "notification delay"):
        print(row(name, floor, locked))
    for label, phase in (("floor", floor), ("lock", locked)):
        writes = ", ".join(f"{n} x {code}" for code, n in sorted(phase["writes"].items(),
                                                                key=str))
        print(f"{label}: writes {writes}; notifications lost {phase['lost']}")


def run(args, tmp):
    redis_proc, redis_url = common.start_redis(tmp / "redis")
    db_path = tmp / "bench.db"
    db_url = args.pg or f"sqlite:///{db_path}"
    app, uid, headers = setup(db_url, redis_url, tmp)
    port = common.free_port()
    web = common.gunicorn(Path(sys.executable).parent, "wsgi:app", port, {
        "DATABASE_URL": db_url, "REDIS_URL": redis_url, "SECRET_KEY": common.SECRET,
        "INSTANCE_PATH": str(tmp), "STREAM_KEEPALIVE_S": str(KEEPALIVE_S),
        "SQLITE_BUSY_TIMEOUT_MS": str(TIMEOUT_MS), "PG_LOCK_TIMEOUT_MS": str(TIMEOUT_MS),
    }, tmp / "gunicorn.log", cwd=args.root)
    try:
        url = f"http://127.0.0.1:{port}"
        requests.get(url + "/api/v1/alerts", headers=headers, timeout=10)  # the key's 1st use
        cookies = [cookie_header(login(url, f"u{i}@bench.example", PASSWORD)) for i in (0, 1)]
        streams = (Stream(port, cookies[1]), Stream(port, cookies[0]))  # idle, busy
        for stream in streams:
            stream.start()
        for stream in streams:
            if not stream.ready.wait(10):  # attached: a notification stored now reaches it
                raise SystemExit("no stream:\n" + (tmp / "gunicorn.log").read_text()[-2000:])
        site = {"app": app, "url": url, "headers": headers, "uid": uid, "streams": streams,
                "writers": args.writers, "numbers": itertools.count()}
        floor = run_phase(site, args.hold, no_lock())
        lock = postgres_lock(args.pg) if args.pg else sqlite_lock(db_path)
        return floor, run_phase(site, args.hold, lock)
    finally:
        common.stop(web)
        common.stop(redis_proc)
        with app.app_context():
            db.engine.dispose()


if __name__ == "__main__":
    main()
