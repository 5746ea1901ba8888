"""Ticks sustained by one listener: a market-wide burst on 200 symbols, nothing firing but
a probe, from a loopback feed through the real listener and matcher into Redis.

The feed runs in its own process and sends trades as fast as it can (the burst), then at a
steady 20,000 a second (the pace). One trade in PROBE_EVERY crosses an alert on BTCUSDT; its
notification on the user's channel gives the tick -> notification latency under load, and the
last one tells when the listener has caught up; the notifications are read by a process of
their own. Redis runs as `make run` starts it (the append-only file on, fsync before each
answer), then the pace again with fsync once a second (`paced_everysec`), as most deployments
run it. Prints a table, then the figures as JSON.
    python bench/sustained.py [--burst 60000] [--rate 20000] [--seconds 4]
"""

import argparse
import gc
import json
import multiprocessing
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools import redisd  # noqa: E402
from devtools.fakefeed import FakeFeed  # noqa: E402
from webapp import keys  # noqa: E402
from webapp.alerts import index as alert_index  # noqa: E402
from webapp.models import Alert  # noqa: E402
from worker.listener.connection import Listener  # noqa: E402
from worker.matcher import Matcher  # noqa: E402

SYMBOLS = 200
PROBE = "BTCUSDT"
PROBE_EVERY = 200
USER_ID = 1
FAR_ALERTS = 5  # per symbol, far from any price the burst reaches


def symbols():
    return [PROBE] + [f"S{i:03d}USDT" for i in range(1, SYMBOLS)]


def arm(r):
    """Far alerts on every symbol, and the probe's pair (above 100 / below 90, recurring)."""
    alert_id = 0
    for symbol in symbols():
        for n in range(FAR_ALERTS):
            alert_id += 1
            condition, target = ("above", 1e9 + n) if n % 2 else ("below", 1e-6 * (n + 1))
            alert_index.index(_alert(alert_id, 1000 + alert_id, symbol, condition, target), r)
    for condition, target in (("above", 100.0), ("below", 90.0)):
        alert_id += 1
        alert_index.index(_alert(alert_id, USER_ID, PROBE, condition, target), r)


def _alert(alert_id, user_id, symbol, condition, target):
    return Alert(id=alert_id, user_id=user_id, symbol=symbol, condition=condition,
                 target=target, mode="recurring", buffer=1.0, buffer_is_pct=False,
                 expires_at=None, note="", active=True)


def trades(n, rng):
    """(symbol, price, is_probe) for n trades: probes alternate 101 and 89, the probe
    symbol's other trades sit at 95 (re-arming both), the others walk near 50."""
    out, crossing = [], 0
    names = symbols()
    for i in range(n):
        if i % PROBE_EVERY == PROBE_EVERY - 1:
            crossing += 1
            out.append((PROBE, 101.0 if crossing % 2 else 89.0, True))
        elif i % PROBE_EVERY == 0:
            out.append((PROBE, 95.0, False))
        else:
            out.append((names[rng.randrange(1, SYMBOLS)], round(rng.uniform(49, 51), 4), False))
    return out


# -- the feed's process --------------------------------------------------------------
def feed_process(conn):
    feed = FakeFeed(max_rate=50).start()
    conn.send(feed.url)
    while (job := conn.recv()) is not None:
        batch, rate = job
        conn.send(_send(feed, batch, rate))
    feed.stop()


def _send(feed, batch, rate):
    """Send `batch` at `rate` a second (None: flat out); the probes' send times."""
    probes, start, i = [], time.perf_counter(), 0
    while i < len(batch):
        due = len(batch) if rate is None else int((time.perf_counter() - start) * rate) + 1
        chunk, at = batch[i:min(due, i + 500)], time.time()  # before: no latency hidden
        feed.trades([(symbol, price) for symbol, price, _ in chunk])
        probes += [at] * sum(probe for _, _, probe in chunk)
        i += len(chunk)
        time.sleep(0 if rate is None else 0.0005)
    return probes, time.perf_counter() - start


# -- the listener's side -------------------------------------------------------------
class Probes:
    """Arrival times of the probe's notifications on the user's channel, read by a process
    of its own: a thread here would wait for the listener's GIL (up to 5 ms a switch)."""

    def __init__(self, r, url):
        self.redis = r
        self.count = 0
        self.conn, child = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("spawn").Process(
            target=probe_process, args=(url, child), daemon=True)
        self.process.start()
        self.conn.recv()  # subscribed

    def wait(self, n, timeout=60):
        """Every arrival so far, once there are `n` (or at the timeout)."""
        self.conn.send((n, timeout))
        arrivals = self.conn.recv()
        self.count = len(arrivals)
        return arrivals

    def close(self):
        self.conn.send(None)
        self.process.join(5)


def probe_process(url, conn):
    pubsub = redis.Redis.from_url(url).pubsub()
    pubsub.subscribe(keys.user_channel(USER_ID))
    while pubsub.get_message(timeout=5) is None:  # until subscribed
        pass
    arrivals, changed = [], threading.Condition()

    def read():
        while True:
            if pubsub.get_message(timeout=1) is not None:
                with changed:
                    arrivals.append(time.time())
                    changed.notify_all()

    threading.Thread(target=read, daemon=True).start()
    conn.send("ready")
    while (job := conn.recv()) is not None:
        n, timeout = job
        with changed:
            changed.wait_for(lambda n=n: len(arrivals) >= n, timeout)
            conn.send(list(arrivals))


def _redis_cpu_s(r):
    cpu = r.info("cpu")
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"]


def phase(conn, probes, batch, rate):
    """One run of `batch`. CPU figures (µs a tick) move less with the machine's load than
    rates do: Redis's own (user + system, fsyncs included) and this process's, which is
    the listener's."""
    probes.redis.config_resetstat()
    before = probes.count
    redis_cpu, listener_cpu = _redis_cpu_s(probes.redis), time.process_time()
    conn.send((batch, rate))
    sent, feed_s = conn.recv()
    arrived = probes.wait(before + len(sent))[before:]
    listener_cpu = time.process_time() - listener_cpu
    redis_cpu = _redis_cpu_s(probes.redis) - redis_cpu
    latencies = sorted((a - s) * 1000 for s, a in zip(sent, arrived, strict=False))
    span = (arrived[-1] - sent[0]) if arrived else float("nan")
    evalsha = probes.redis.info("commandstats").get("cmdstat_evalsha", {})
    return {
        "ticks": len(batch), "feed_per_s": round(len(batch) / feed_s),
        "server_us_per_tick": evalsha.get("usec_per_call"),
        "redis_cpu_us_per_tick": round(redis_cpu * 1e6 / len(batch), 1),
        "listener_cpu_us_per_tick": round(listener_cpu * 1e6 / len(batch), 1),
        "listener_per_s": round(len(batch) / span) if arrived else 0,
        "probes": len(sent), "lost": len(sent) - len(arrived),
        "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)], 2)
        if latencies else None,
    }


def run(burst=60_000, rate=20_000, seconds=4.0):
    rng = random.Random(7)
    parent, child = multiprocessing.Pipe()
    feeder = multiprocessing.get_context("spawn").Process(target=feed_process, args=(child,))
    feeder.start()
    stop, probes = threading.Event(), None
    with tempfile.TemporaryDirectory() as tmp:
        process, url = redisd.start(Path(tmp) / "redis")
        try:
            r = redis.Redis.from_url(url, decode_responses=True)
            arm(r)
            probes = Probes(r, url)
            listener = Listener(r, Matcher(r), parent.recv())
            gc.collect()  # as the listener's host does (worker/listener/hosting.py)
            gc.freeze()
            threading.Thread(target=listener.run, args=(stop,), daemon=True).start()
            _wait(lambda: r.hget(keys.LISTENER, "streams") == str(2 * SYMBOLS), listener)
            phase(parent, probes, trades(2000, rng), None)  # warm up
            results = {"burst": phase(parent, probes, trades(burst, rng), None),
                       "paced": phase(parent, probes, trades(int(rate * seconds), rng), rate)}
            r.config_set("appendfsync", "everysec")  # as most deployments run Redis
            results["paced_everysec"] = phase(parent, probes, trades(int(rate * seconds), rng),
                                              rate)
            results["ping_ms"] = _ping_ms(r)
        finally:
            stop.set()
            if probes is not None:
                probes.close()
            parent.send(None)
            feeder.join(10)
            redisd.stop(process)
    return results


def _wait(predicate, listener, timeout=60):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"the listener did not subscribe: {listener.state}")
        time.sleep(0.05)


def _ping_ms(r, n=2000):
    start = time.perf_counter()
    for _ in range(n):
        r.ping()
    return round((time.perf_counter() - start) * 1000 / n, 3)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=60_000)
    parser.add_argument("--rate", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    print(json.dumps({"sustained": report(run(args.burst, args.rate, args.seconds))}))


def report(results):
    """Print the table; returns the figures."""
    print(f"{'':14} {'ticks':>7} {'feed/s':>8} {'listener/s':>11} {'probes':>7} "
          f"{'lost':>5} {'p50 ms':>7} {'p99 ms':>7} {'Redis µs/tick':>13} "
          f"{'CPU µs/tick: Redis':>18} {'listener':>8}")
    for name in ("burst", "paced", "paced_everysec"):
        row = results[name]
        print(f"{name:14} {row['ticks']:>7} {row['feed_per_s']:>8} {row['listener_per_s']:>11} "
              f"{row['probes']:>7} {row['lost']:>5} {row['p50_ms']!s:>7} {row['p99_ms']!s:>7} "
              f"{row['server_us_per_tick']!s:>13} {row['redis_cpu_us_per_tick']!s:>18} "
              f"{row['listener_cpu_us_per_tick']!s:>8}")
    floor = 1000 / results["ping_ms"]
    print(f"floor: one round trip a tick (PING {results['ping_ms']} ms) = {floor:,.0f} ticks/s")
    print(f"target: >= 20,000 ticks/s, p99 <= 10 ms: burst "
          f"{results['burst']['listener_per_s'] / 20000:.2f}x of the target rate; p99 paced "
          f"{results['paced']['p99_ms']} ms (fsync always), "
          f"{results['paced_everysec']['p99_ms']} ms (everysec)")
    return results


if __name__ == "__main__":
    main()
