"""The product as `make run` runs it (python -m devtools.launch: every process and a private
Redis) against a loopback Binance feed, for tests that drive it from outside."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from itertools import count
from pathlib import Path

import redis
import requests
from sqlalchemy import select

from webapp import create_app, keys
from webapp.accounts import service as accounts
from webapp.alerts import index as alert_index
from webapp.extensions import data_redis, db
from webapp.models import Alert, User

ROOT = Path(__file__).resolve().parent.parent
SYMBOLS = (f"DRILL{n}USDT" for n in count())


def until(predicate, timeout, every=0.05):
    """The predicate's first truthy value within `timeout` seconds, else None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (OSError, requests.RequestException, redis.RedisError):
            value = None
        if value:
            return value
        time.sleep(every)
    return None


def _held_socket(port=0):
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.bind(("127.0.0.1", port))
    return held


class Product:
    """`python -m devtools.launch` (what `make run` starts) against a loopback feed."""

    def __init__(self, tmp, feed, env=None, cluster=None):
        """`cluster`: a devtools.rediscluster.Cluster for the data plane (REDIS_CLUSTER_NODES)."""
        # the web port, held bound here and handed down (LISTEN_FD): nothing else can take it
        self.held = _held_socket()
        self.tmp, self.feed, self.port = tmp, feed, self.held.getsockname()[1]
        self.env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        self.env.update(**(env or {}))
        nodes = cluster.nodes if cluster else []
        self.nodes = [(host, int(port)) for host, port in (n.split(":") for n in nodes)]
        if nodes:
            self.env["REDIS_CLUSTER_NODES"] = ",".join(nodes)
        self.env.update(INSTANCE_PATH=str(tmp), FLASK_APP="wsgi.py",
                        DATABASE_URL=f"sqlite:///{tmp / 'tb.db'}", BINANCE_WS_URL=feed.url)
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self):
        if self.held.fileno() == -1:  # started again after a stop: the same port
            self.held = _held_socket(self.port)
        self.env["LISTEN_FD"] = str(self.held.fileno())
        bin_dir = Path(sys.executable).parent
        subprocess.run([bin_dir / "flask", "db", "upgrade"], env=self.env, cwd=ROOT,
                       check=True, capture_output=True)
        self.log = open(self.tmp / "launch.log", "wb")  # noqa: SIM115 (closed in stop)
        self.launcher = subprocess.Popen([sys.executable, "-m", "devtools.launch"], env=self.env,
                                         cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                         pass_fds=[self.held.fileno()])
        url = until(lambda: (self.tmp / "redis.url").read_text().strip(), 30)
        assert url, "no private Redis address under the instance folder"
        self.app = create_app({"TESTING": True, "REDIS_URL": url, "INSTANCE_PATH": str(self.tmp),
                               "SQLALCHEMY_DATABASE_URI": self.env["DATABASE_URL"],
                               "REDIS_CLUSTER_NODES": self.nodes})
        self.redis = data_redis(self.app.config, socket_timeout=2)  # the data plane
        with self.app.app_context():  # started again: the same user
            known = db.session.scalar(select(User.id).where(User.email == "drill@example.com"))
            self.uid = known or accounts.create_user("drill@example.com", "correct horse").id
        assert self.wait_healthy(60), self.output()

    def stop(self):
        self.launcher.send_signal(signal.SIGINT)
        code = self.launcher.wait(60)
        self.log.close()
        self.held.close()
        return code

    def output(self):
        return (self.tmp / "launch.log").read_text(errors="replace")[-4000:]

    def health(self):
        return requests.get(self.base + "/api/v1/health", timeout=2).json()

    def wait_healthy(self, timeout):
        return until(lambda: self.health()["status"] == "ok", timeout, every=0.1)

    def pids(self, role):
        return {p["pid"] for p in self.health()["processes"][role]["processes"] if p["alive"]}

    def arm(self, n, symbol, target):
        """`n` one-shot `above` alerts at `target`, armed; returns their ids."""
        with self.app.app_context():
            rows = [Alert(user_id=self.uid, symbol=symbol, condition="above", target=target,
                          mode="once", buffer=0.5, buffer_is_pct=False, note="")
                    for _ in range(n)]
            db.session.add_all(rows)
            db.session.commit()
            for alert in rows:
                alert_index.index(alert)
            ids = [alert.id for alert in rows]
        assert self.feed.wait_for_subscription(f"{symbol.lower()}@aggTrade", timeout=15)
        return ids

    def notified(self):
        """How many notifications each alert has in the user's inbox."""
        entries = self.redis.xrange(keys.replay(self.uid))
        return Counter(json.loads(fields["data"]).get("alert_id") for _, fields in entries)

    def wait_fired(self, ids, timeout=30):
        """Every alert in `ids` notified; returns the counts once they stop changing."""
        def all_in():
            seen = self.notified()
            return all(seen[str(i)] for i in ids)

        until(all_in, timeout)
        settled = self.notified()
        return [settled[str(i)] for i in ids]

    def fresh_alert_fires(self):
        symbol = next(SYMBOLS)
        [fresh] = self.arm(1, symbol, 100)
        self.feed.trade(symbol, 101)
        return self.wait_fired([fresh]) == [1]
