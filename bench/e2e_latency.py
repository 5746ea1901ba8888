"""Tick to browser: a trade sent by the fake Binance server -> the SSE event read by a client.

The real path: fake feed -> `flask listener --direct` (listener + matcher Lua, a process of
its own) -> Redis pub/sub -> gunicorn gevent web worker (hub, /stream) -> a raw SSE client.
100 ticks a second: every other tick crosses one of the measuring user's two recurring
alerts on BTCUSDT (so it fires one notification), the others land on background symbols.
10k armed alerts sit in the index and 1k idle SSE clients are connected throughout.
    python bench/e2e_latency.py [--ticks 2000] [--rate 100] [--idle 1000] [--alerts 10000]
"""

import argparse
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import sse_common as common  # puts the project on sys.path
from sse_common import percentile

from devtools.fakefeed import FakeFeed
from webapp.extensions import db
from webapp.models import Alert

WARMUP = 100
SYMBOL = "BTCUSDT"
PRICE = re.compile(rb"traded at ([0-9.]+)")


def arm(app, measuring_uid, owners, count):
    """The user's two recurring alerts, and `count` background alerts that never fire."""
    rows = [dict(user_id=measuring_uid, symbol=SYMBOL, condition=cond, target=target,
                 mode="recurring", buffer=1.0) for cond, target in (("above", 100), ("below", 90))]
    for i in range(count):
        symbol = SYMBOL if i % 100 == 0 else f"S{i % 100:03d}USDT"
        cond, target = ("above", 1e9 + i) if i % 2 else ("below", 0.000001)
        rows.append(dict(user_id=owners[i % len(owners)], symbol=symbol, condition=cond,
                         target=target, mode="once", buffer=0.5))
    with app.app_context():
        db.session.execute(db.insert(Alert), rows)
        db.session.commit()
        db.session.remove()


def open_idle(port, cookies):
    """Connected SSE clients that never read past their first event."""
    socks = []
    for cookie in cookies:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(f"GET /stream HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n".encode())
        buf = b""
        while b"event: unread" not in buf:
            buf += sock.recv(65536)
        socks.append(sock)
    return socks


class Reader(threading.Thread):
    """Reads the measuring stream; notes when each notification (by its price) arrives."""

    def __init__(self, sock):
        super().__init__(daemon=True)
        self.sock, self.arrived, self.tail = sock, {}, b""

    def run(self):
        while True:
            data = self.sock.recv(65536)
            if not data:
                return
            now = time.perf_counter()
            self.tail += data
            *blocks, self.tail = self.tail.split(b"\n\n")
            for block in blocks:
                if block.startswith(b"id:") and b"event: notification" in block:
                    match = PRICE.search(block)
                    if match:
                        self.arrived[round(float(match.group(1)), 6)] = now


def drive(feed, ticks, rate):
    """Send `ticks` trades at `rate` a second; {price: time it left the server} for BTCUSDT."""
    sent, start = {}, time.perf_counter()
    for i in range(ticks):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        if i % 2:
            feed.trade(f"S{random.randrange(100):03d}USDT", round(random.uniform(10, 90), 4))
            continue
        k = i // 2
        price = round(101 + k / 1e4, 6) if k % 2 == 0 else round(89 - k / 1e4, 6)
        feed.trade(SYMBOL, price)
        sent[price] = feed.last_sent
    return sent


def summary(sent, arrived):
    order = sorted(sent, key=sent.get)[WARMUP:]
    lat = sorted((arrived[p] - sent[p]) * 1000 for p in order if p in arrived)
    return {"measured": len(order), "delivered": len(lat),
            "p50_ms": round(percentile(lat, 50), 3), "p95_ms": round(percentile(lat, 95), 3),
            "p99_ms": round(percentile(lat, 99), 3), "mean_ms": round(statistics.fmean(lat), 3),
            "max_ms": round(lat[-1], 3)}


def run(args, tmp):
    redis_process, redis_url = common.start_redis(tmp / "redis")
    procs = [redis_process]
    feed = FakeFeed().start()
    try:
        db_url = f"sqlite:///{tmp / 'e2e.db'}"
        app, users = common.make_users(db_url, redis_url, 1 + args.idle + 100)
        (uid, cookie), idle, owners = users[0], users[1:1 + args.idle], users[1 + args.idle:]
        arm(app, uid, [o for o, _ in owners], args.alerts)
        env = {"DATABASE_URL": db_url, "REDIS_URL": redis_url, "SECRET_KEY": common.SECRET,
               "BINANCE_WS_URL": feed.url, "INSTANCE_PATH": str(tmp), "STREAM_KEEPALIVE_S": "60"}
        port = common.free_port()
        procs.append(common.gunicorn(Path(sys.executable).parent, "wsgi:app", port, env,
                                     tmp / "web.log"))
        with open(tmp / "listener.log", "ab") as log:
            procs.append(subprocess.Popen(
                [str(Path(sys.executable).parent / "flask"), "--app", "wsgi", "listener",
                 "--direct"], cwd=common.ROOT, env={**os.environ, **env},
                stdout=log, stderr=subprocess.STDOUT))
        if not feed.wait_for_subscription(f"{SYMBOL.lower()}@aggTrade", timeout=60):
            raise SystemExit(f"the listener did not subscribe; see {tmp / 'listener.log'}")
        idle_socks = open_idle(port, [c for _, c in idle])
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(f"GET /stream HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n".encode())
        reader = Reader(sock)
        reader.start()
        time.sleep(1.0)  # the reader has the opening; the listener has its streams
        sent = drive(feed, args.ticks, args.rate)
        deadline = time.monotonic() + 10
        while len(reader.arrived) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.05)
        result = summary(sent, reader.arrived)
        for s in [sock, *idle_socks]:
            s.close()
        return result
    finally:
        feed.stop()
        for process in reversed(procs):
            common.stop(process)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--alerts", type=int, default=10000)
    args = parser.parse_args(argv)
    common.raise_fd_limit()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args, Path(tmp))
    result.update(rate=args.rate, armed_alerts=args.alerts + 2, idle_clients=args.idle)
    print(f"{'ticks/s':>8}{'alerts':>8}{'idle':>6}{'measured':>10}{'p50 ms':>9}{'p95 ms':>9}"
          f"{'p99 ms':>9}{'max ms':>9}")
    print(f"{args.rate:>8.0f}{result['armed_alerts']:>8}{args.idle:>6}{result['delivered']:>10}"
          f"{result['p50_ms']:>9.3f}{result['p95_ms']:>9.3f}{result['p99_ms']:>9.3f}"
          f"{result['max_ms']:>9.3f}")
    met = result["p50_ms"] <= 2 and result["p99_ms"] <= 10
    print(f"targets p50 <= 2 ms, p99 <= 10 ms: {'met' if met else 'MISSED'}")
    print(json.dumps({"e2e_latency": result}))


if __name__ == "__main__":
    main()
