"""The product as `make run` runs it with its data plane on a real Redis Cluster
(REDIS_CLUSTER_NODES; RQ on the private Redis): alerts on symbols owned by every master fire
exactly once through the real listener, and a master killed mid-storm is replaced by its
replica without a hand; the notifications it costs are counted."""

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from devtools.fakefeed import FakeFeed
from tests.cluster import start_or_skip
from tests.product import ROOT, Product, until
from webapp import keys
from webapp.extensions import db
from webapp.models import Alert

LEVELS, PER_LEVEL = 60, 5


def symbol_per_master(r, prefix):
    found = {}
    for i in itertools.count():
        symbol = f"{prefix}{i}USDT"
        found.setdefault(r.get_node_from_key(keys.alerts(symbol)).name, symbol)
        if len(found) == len(r.get_primaries()):
            return found


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    """A cluster of the module's own (the drill kills one of its masters) and the product."""
    cluster = start_or_skip(tmp_path_factory.mktemp("cluster"))
    with FakeFeed() as feed:
        product = Product(tmp_path_factory.mktemp("product"), feed, cluster=cluster)
        try:
            product.start()
            yield product, cluster
            assert product.stop() == 0, product.output()
        finally:
            cluster.stop()


def test_alerts_on_every_master_fire_once_through_the_listener(clustered):
    product, _ = clustered
    symbols = symbol_per_master(product.redis, "CL")
    ids = {symbol: product.arm(5, symbol, 100) for symbol in symbols.values()}
    for symbol in symbols.values():
        product.feed.trade(symbol, 101)
    for armed in ids.values():
        assert product.wait_fired(armed) == [1] * len(armed), product.output()
    assert product.health()["status"] == "ok"


def test_every_process_beats_on_a_cluster_the_web_workers_too(clustered):
    """A web worker's cluster client is made on first use: its heartbeat makes it."""
    product, _ = clustered
    for role in ("web", "worker", "listener", "scheduler"):
        assert until(lambda role=role: product.pids(role), 15), (role, product.output())
    assert "Traceback" not in (product.tmp / "launch.log").read_text(errors="replace")


def test_a_master_killed_mid_storm_is_replaced_and_the_product_goes_on(clustered):
    product, cluster = clustered
    fired = product.redis.get_node_from_key(keys.FIRED).name  # the next test's victim
    victim, symbol = next((node, symbol) for node, symbol in
                          sorted(symbol_per_master(product.redis, "KILL").items())
                          if node != fired)
    ids = [i for level in range(1, LEVELS + 1) for i in product.arm(PER_LEVEL, symbol, level)]
    for level in range(1, LEVELS + 1):  # the storm: each trade a new high firing PER_LEVEL
        product.feed.trade(symbol, level)
        time.sleep(0.02)
        if level == LEVELS // 3:
            cluster.kill(int(victim.rsplit(":", 1)[1]))
            killed = time.monotonic()
    cluster.wait_healthy(30)
    assert until(lambda: product.health()["status"] == "ok", 60), product.output()
    healthy = time.monotonic() - killed
    product.feed.trade(symbol, LEVELS + 1)  # what the failover held back fires now
    counts = product.wait_fired(ids, timeout=60)
    lost, twice = counts.count(0), sum(1 for n in counts if n > 1)
    print(f"master killed: healthy again after {healthy:.1f} s; of {len(ids)} alerts "
          f"{lost} lost, {twice} notified twice")
    # async replication: what the victim acknowledged in its last instant, a trade's worth
    assert lost + twice <= 2 * PER_LEVEL
    assert product.fresh_alert_fires()


def test_the_slow_paths_master_killed_mid_storm_costs_no_notification(clustered):
    """tb:{fired}'s master killed mid-storm, the symbol's and the user's masters alive: the
    listener's hand-off fails and the sweep hands the batches on once the replica took over.
    Every alert is notified exactly once; the slow path settles each in SQL, but for what
    the victim acknowledged in its last instant (asynchronous replication)."""
    product, cluster = clustered
    fired = product.redis.get_node_from_key(keys.FIRED).name
    assert product.redis.get_node_from_key(keys.replay(product.uid)).name != fired
    symbol = next(symbol for node, symbol in
                  sorted(symbol_per_master(product.redis, "SLOW").items()) if node != fired)
    ids = [i for level in range(1, LEVELS + 1) for i in product.arm(PER_LEVEL, symbol, level)]
    for level in range(1, LEVELS + 1):
        product.feed.trade(symbol, level)
        time.sleep(0.02)
        if level == LEVELS // 3:
            cluster.kill(int(fired.rsplit(":", 1)[1]))
    cluster.wait_healthy(30)
    assert product.wait_fired(ids, timeout=60) == [1] * len(ids), product.output()
    until(lambda: not active_of(product, ids), 30)
    unsettled = active_of(product, ids)
    print(f"slow path's master killed: {len(ids)} alerts notified once each; "
          f"{len(unsettled)} not settled in SQL")
    assert len(unsettled) <= PER_LEVEL, product.output()
    assert product.wait_healthy(60) and product.fresh_alert_fires()


def active_of(product, ids):
    """Those of the alerts SQL still has active: the slow path has not settled them."""
    with product.app.app_context():
        return db.session.scalars(select(Alert.id).where(Alert.id.in_(ids), Alert.active)).all()


def test_a_second_shell_without_the_setting_reaches_the_cluster(clustered):
    """`flask notify` from a shell that lacks REDIS_CLUSTER_NODES follows the running
    make run's (instance/cluster.nodes): before, it wrote into the private Redis, where no
    page reads, and said "sent"."""
    product, _ = clustered
    env = {k: v for k, v in product.env.items()
           if k not in ("REDIS_CLUSTER_NODES", "DATABASE_URL", "LISTEN_FD")}
    sent = subprocess.run(
        [Path(sys.executable).parent / "flask", "notify", "drill@example.com",
         "SYSTEM_MAINTENANCE", "From a second shell", "Maintenance at noon."],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    titles = [json.loads(fields["data"])["title"]
              for _, fields in product.redis.xrange(keys.replay(product.uid))]
    assert "From a second shell" in titles
