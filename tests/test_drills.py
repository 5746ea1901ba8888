"""Fault drills against the product as `make run` runs it: every process, a private Redis,
a loopback Binance feed. Each drill counts crossings against notifications (none lost, none
twice) and ends with a fresh alert firing; nothing is restarted by hand.

`DRILL_ROUNDS=N` repeats the Redis drills N times and prints the recovery times.
"""

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from devtools.fakefeed import FakeFeed
from tests.product import SYMBOLS, Product, until

ROUNDS = int(os.environ.get("DRILL_ROUNDS", "1"))


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
    before = product.pids(role)
    # the web process is gunicorn's master; the heartbeats come from its WEB_CONCURRENCY
    # workers, which go down with it
    victim = _parent(min(before)) if role == "web" else min(before)
    assert role == "web" or len(before) == 1
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    if role != "listener":  # the feed is still watched: cross while the process is down
        product.feed.trade(symbol, 101)
    assert until(lambda: product.pids(role) - before, 60), product.output()
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
        frozen_at = time.monotonic()
        product.feed.trade(symbol, 101)
        product.feed.trade(symbol, 99)
        # a load balancer's probe (4 s, say) is answered 503 meanwhile, not left hanging
        probe = requests.get(product.base + "/api/v1/health", timeout=4)
        assert probe.status_code == 503 and probe.json()["redis"] == "down", probe.text
        time.sleep(max(0.0, 8 - (time.monotonic() - frozen_at)))  # the drill is an 8 s freeze
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
