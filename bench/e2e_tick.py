"""Tick to notification: from the fake Binance server sending a trade to the notification
arriving on the user's Redis channel, through the real listener and matcher.

Every tick crosses one of two recurring alerts (above 100, below 90), so every tick makes
exactly one notification. On one Redis (the matcher's one step, PUBLISH) and on a 3-master,
3-replica Redis Cluster (two steps, SPUBLISH), side by side in one run. Prints a table, then
the figures as JSON on the last line.
    python bench/e2e_tick.py [--ticks 2000] [--no-cluster]
"""

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools import rediscluster, redisd  # noqa: E402
from devtools.fakefeed import FakeFeed  # noqa: E402
from webapp import keys  # noqa: E402
from webapp.alerts import index as alert_index  # noqa: E402
from webapp.extensions import data_redis, is_cluster  # noqa: E402
from webapp.models import Alert  # noqa: E402
from worker.listener.connection import Listener  # noqa: E402
from worker.matcher import Matcher  # noqa: E402
from worker.outbox import DEFAULT_HAND_OFF_QUEUE  # noqa: E402

USER_ID = 1
WARMUP = 100


def arm(r):
    for alert_id, condition, target in ((1, "above", 100.0), (2, "below", 90.0)):
        alert = Alert(id=alert_id, user_id=USER_ID, symbol="BTCUSDT", condition=condition,
                      target=target, mode="recurring", buffer=1.0, buffer_is_pct=False,
                      expires_at=None, note="", active=True)
        alert_index.index(alert, r)


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out setting up the benchmark")
        time.sleep(0.01)


def measure(feed, receive, ticks):
    """Latency in ms of each tick: leaving the fake server -> message on the channel."""
    latencies = []
    for i in range(ticks + WARMUP):
        feed.trade("BTCUSDT", 101.0 if i % 2 == 0 else 89.0)
        msg = receive()
        if msg is None:
            raise SystemExit(f"tick {i}: no notification within 5 s")
        arrived = time.perf_counter()
        if i >= WARMUP:
            latencies.append((arrived - feed.last_sent) * 1000)
    return latencies


def summary(latencies):
    ordered = sorted(latencies)
    return {
        "ticks": len(ordered),
        "median_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
        "max_ms": round(ordered[-1], 3),
    }


def run(ticks, cluster=True):
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        # TCP and append-only on, as in production (the tests use a Unix socket)
        process, url = redisd.start(Path(tmp) / "redis", port=redisd.free_port())
        try:
            results["one_redis"] = through(redis.Redis.from_url(url, decode_responses=True),
                                           ticks)
        finally:
            redisd.stop(process)
        if cluster:
            nodes = rediscluster.start(Path(tmp) / "cluster")
            try:
                config = {"REDIS_CLUSTER_NODES": [
                    (h, int(p)) for h, p in (n.split(":") for n in nodes.nodes)]}
                results["cluster"] = through(data_redis(config), ticks)
            finally:
                nodes.stop()
    return results


def through(r, ticks):
    """The figures of `ticks` ticks through a listener on `r` (one Redis or a cluster)."""
    stop = threading.Event()
    try:
        arm(r)
        pubsub = r.pubsub(ignore_subscribe_messages=True)
        if is_cluster(r):
            pubsub.ssubscribe(keys.user_channel(USER_ID))
            receive = lambda: pubsub.get_sharded_message(  # noqa: E731
                ignore_subscribe_messages=True, timeout=5)
        else:
            pubsub.subscribe(keys.user_channel(USER_ID))
            receive = lambda: pubsub.get_message(timeout=5)  # noqa: E731
        receive()  # reads the subscribe confirmation (and returns None)
        with FakeFeed() as feed:
            matcher = Matcher(r, hand_off_queue=DEFAULT_HAND_OFF_QUEUE)  # as `flask listener`
            listener = Listener(r, matcher, feed.url)
            thread = threading.Thread(target=listener.run, args=(stop,), daemon=True)
            thread.start()
            wait_for(lambda: "btcusdt@aggTrade" in feed.subscriptions())
            result = summary(measure(feed, receive, ticks))
            stop.set()
            thread.join(5)
            matcher.close()
        pubsub.close()
    finally:
        r.close()
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=2000)
    parser.add_argument("--no-cluster", action="store_true", help="one Redis only")
    args = parser.parse_args(argv)
    results = run(args.ticks, cluster=not args.no_cluster)
    print(f"{'':10} {'ticks':>8} {'median ms':>10} {'p99 ms':>8} {'mean ms':>8} {'max ms':>8}")
    for name, result in results.items():
        print(f"{name:10} {result['ticks']:>8} {result['median_ms']:>10.3f} "
              f"{result['p99_ms']:>8.3f} {result['mean_ms']:>8.3f} {result['max_ms']:>8.3f}")
    met = all(result["median_ms"] <= 1 for result in results.values())
    print(f"target: median <= 1 ms: {'met' if met else 'MISSED'}")
    print(json.dumps({"e2e_tick": results}))


if __name__ == "__main__":
    main()
