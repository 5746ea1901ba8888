"""Fault drills against the product as `make run` runs it: every process, a private Redis,
a loopback Binance feed. Each drill counts crossings against notifications (none lost, none
twice) and ends with a fresh alert firing; nothing is restarted by hand.

`DRILL_ROUNDS=N` repeats the Redis drills N times and prints the recovery times.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from itertools import count
from pathlib import Path

import pytest
import redis
import requests

from devtools import redisd
from devtools.fakefeed import FakeFeed
from webapp import create_app
from webapp.accounts import service as accounts
from webapp.alerts import index as alert_index
from webapp.extensions import db
from webapp.models import Alert

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("DRILL_ROUNDS", "1"))
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


class Product:
    """`python -m devtools.launch` (what `make run` starts) against a loopback feed."""

    def __init__(self, tmp, feed):
        self.tmp, self.feed, self.port = tmp, feed, redisd.free_port()
        self.env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        self.env.update(PORT=str(self.port), INSTANCE_PATH=str(tmp), FLASK_APP="wsgi.py",
                        DATABASE_URL=f"sqlite:///{tmp / 'tb.db'}", BINANCE_WS_URL=feed.url)
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self):
        bin_dir = Path(sys.executable).parent
        subprocess.run([bin_dir / "flask", "db", "upgrade"], env=self.env, cwd=ROOT,
                       check=True, capture_output=True)
        self.log = open(self.tmp / "launch.log", "wb")  # noqa: SIM115 (closed in stop)
        self.launcher = subprocess.Popen([sys.executable, "-m", "devtools.launch"], env=self.env,
                                         cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        url = until(lambda: (self.tmp / "redis.url").read_text().strip(), 30)
        assert url, "no private Redis address under the instance folder"
        self.redis = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2)
        self.app = create_app({"TESTING": True, "REDIS_URL": url, "INSTANCE_PATH": str(self.tmp),
                               "SQLALCHEMY_DATABASE_URI": self.env["DATABASE_URL"]})
        with self.app.app_context():
            self.uid = accounts.create_user("drill@example.com", "correct horse").id
        assert self.wait_healthy(60), self.output()

    def stop(self):
        self.launcher.send_signal(signal.SIGINT)
        code = self.launcher.wait(60)
        self.log.close()
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
        entries = self.redis.xrange(f"tb:replay:{self.uid}")
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


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    with FakeFeed() as feed:
        product = Product(tmp_path_factory.mktemp("drill"), feed)
        product.start()
        yield product
        assert product.stop() == 0, product.output()


def _parent(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid")))


@pytest.mark.parametrize("role", ["listener", "worker", "scheduler", "web"])
def test_kill_9_of_a_process_loses_nothing_and_it_comes_back(product, role):
    symbol = next(SYMBOLS)
    ids = product.arm(20, symbol, 100)
    [pid] = product.pids(role)
    # the web process is gunicorn's master; the heartbeat comes from its worker
    victim = _parent(pid) if role == "web" else pid
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    if role != "listener":  # the feed is still watched: cross while the process is down
        product.feed.trade(symbol, 101)
    assert until(lambda: product.pids(role) - {pid}, 60), product.output()
    back = time.monotonic() - killed
    assert product.wait_healthy(60), product.output()
    healthy = time.monotonic() - killed
    if role == "listener":  # Binance replays nothing: cross once a listener is back
        assert product.feed.wait_for_subscription(f"{symbol.lower()}@aggTrade", timeout=15)
        product.feed.trade(symbol, 101)
    assert product.wait_fired(ids) == [1] * len(ids)
    assert product.health()["processes"][role]["restarts"] >= 1
    assert until(lambda: not _group_alive(victim), 10), "the dead process left children behind"
    assert product.fresh_alert_fires()
    print(f"kill -9 {role}: beating again after {back:.1f} s, healthy after {healthy:.1f} s")


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _redis_pid(product):
    return product.redis.info("server")["process_id"]


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_redis_killed_mid_storm_every_crossing_fires_once(product, round_):
    symbol = next(SYMBOLS)
    ids = product.arm(2000, symbol, 100)
    pid = _redis_pid(product)
    product.feed.trade(symbol, 101)
    os.kill(pid, signal.SIGKILL)  # mid-storm: the matcher's call may or may not have run
    started = time.monotonic()
    product.feed.trade(symbol, 99)  # the price moves back while Redis is away
    assert until(lambda: _redis_pid(product) != pid, 30), product.output()
    counts = product.wait_fired(ids)
    took = time.monotonic() - started
    assert Counter(counts) == Counter({1: len(ids)}), Counter(counts)
    assert product.wait_healthy(60), product.output()
    assert product.fresh_alert_fires()
    print(f"redis kill -9 mid-storm: {len(ids)} alerts, all notified once after {took:.2f} s")


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_redis_frozen_8_s_every_crossing_fires_once(product, round_):
    symbol = next(SYMBOLS)
    ids = product.arm(200, symbol, 100)
    pid = _redis_pid(product)
    os.kill(pid, signal.SIGSTOP)
    try:
        product.feed.trade(symbol, 101)
        product.feed.trade(symbol, 99)
        time.sleep(8)  # the drill is a freeze of this length, not a wait for an event
    finally:
        os.kill(pid, signal.SIGCONT)
    started = time.monotonic()
    counts = product.wait_fired(ids)
    assert Counter(counts) == Counter({1: len(ids)}), Counter(counts)
    assert product.wait_healthy(60), product.output()
    assert product.fresh_alert_fires()
    print(f"redis frozen 8 s: all notified {time.monotonic() - started:.2f} s after it thawed")


def test_nothing_exited_for_good_and_ctrl_c_stops_cleanly(product):
    assert product.launcher.poll() is None
    assert product.health()["missing"] == []
