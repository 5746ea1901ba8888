"""Matching benchmark: per-tick cost with 1k..1M armed alerts, a naive baseline, a fire storm.

Runs against a private redis-server (devtools/redisd.py); the index is loaded directly, not
through SQL. Prints a table, then the figures as JSON on the last line.
    python bench/matching.py [--sizes 1000,10000] [--ticks 20000] [--storm 100000]
"""

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools import redisd  # noqa: E402
from webapp import keys  # noqa: E402
from webapp.alerts.index import fmt_num, idx_key, pack_row  # noqa: E402
from worker.matcher import Matcher  # noqa: E402

SYMBOLS = [f"SYM{i:03d}USDT" for i in range(100)]
LOAD_CHUNK = 10_000


def base_price(symbol):
    return 10.0 + 1000.0 * (int(symbol[3:6]) + 1)


def load(r, n, rng):
    """n armed alerts over 100 symbols, half above and half below, none near the price."""
    pipe = r.pipeline(transaction=False)
    sets = {}
    for i in range(1, n + 1):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        p = base_price(symbol)
        cond = "above" if i % 2 else "below"
        target = p * rng.uniform(1.01, 2.0) if cond == "above" else p * rng.uniform(0.5, 0.99)
        pipe.hset(keys.ALERTS, i, pack_row({
            "user_id": i % 5000, "symbol": symbol, "condition": cond, "target": fmt_num(target),
            "mode": "once", "rearm": fmt_num(target), "expires_at": 0, "note": ""}))
        sets.setdefault(idx_key(symbol, cond), {})[i] = target
        if i % LOAD_CHUNK == 0:
            pipe.execute()
    for key, members in sets.items():
        pipe.zadd(key, members)
    pipe.hset(keys.SYMBOLS, mapping={s: n // len(SYMBOLS) for s in SYMBOLS})
    pipe.execute()


def quiet_tick(rng):
    symbol = rng.choice(SYMBOLS)
    return symbol, base_price(symbol) * rng.uniform(0.995, 1.005)


def server_us_per_call(r):
    stats = r.info("commandstats").get("cmdstat_evalsha", {})
    return stats.get("usec_per_call", 0.0)


def ping_run(r, n=5000):
    """The client round trip with no work at all: the floor under every per-tick figure."""
    samples = []
    started = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        r.ping()
        samples.append(time.perf_counter() - t0)
    return summary(samples, time.perf_counter() - started)


def indexed_run(r, ticks, rng):
    """Per-tick latency of the Lua matcher (client round trip) with nothing firing."""
    matcher = Matcher(r)
    ts = int(time.time() * 1000)
    for _ in range(1000):  # warm up: script cache, connection
        matcher.on_price(*quiet_tick(rng), ts)
    r.config_resetstat()
    samples = []
    started = time.perf_counter()
    for i in range(ticks):
        symbol, price = quiet_tick(rng)
        t0 = time.perf_counter()
        fired = matcher.on_price(symbol, price, ts + i)
        samples.append(time.perf_counter() - t0)
        assert not fired
    elapsed = time.perf_counter() - started
    return summary(samples, elapsed) | {"server_us": server_us_per_call(r)}


def naive_run(r, ticks, rng):
    """Baseline without an index: each tick loads every alert and compares it in Python."""
    keys = [idx_key(s, c) for s in SYMBOLS for c in ("above", "below")]
    samples = []
    started = time.perf_counter()
    for _ in range(ticks):
        symbol, price = quiet_tick(rng)
        t0 = time.perf_counter()
        pipe = r.pipeline(transaction=False)
        for key in keys:
            pipe.zrange(key, 0, -1, withscores=True)
        hits = []
        for key, members in zip(keys, pipe.execute(), strict=True):
            _, _, sym, cond = key.split(":")
            for alert_id, target in members:
                if sym == symbol and (price >= target if cond == "above" else price <= target):
                    hits.append(alert_id)
        samples.append(time.perf_counter() - t0)
        assert not hits
    return summary(samples, time.perf_counter() - started)


def summary(samples, elapsed):
    samples.sort()
    return {
        "ticks": len(samples),
        "median_ms": statistics.median(samples) * 1000,
        "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000,
        "ticks_per_s": len(samples) / elapsed,
    }


def _command(entry):
    command = entry["command"]
    return (command.decode() if isinstance(command, bytes) else command).upper()


def storm(r, n):
    """One tick fires n alerts on one symbol: notifications created per second."""
    r.flushall()
    pipe = r.pipeline(transaction=False)
    for i in range(1, n + 1):
        pipe.hset(keys.ALERTS, i, pack_row({
            "user_id": i % 1000, "symbol": "BTCUSDT", "condition": "above",
            "target": i, "mode": "once", "rearm": i - 0.5, "expires_at": 0, "note": ""}))
        if i % LOAD_CHUNK == 0:
            pipe.execute()
    pipe.zadd(idx_key("BTCUSDT", "above"), {i: i for i in range(1, n + 1)})
    pipe.hset(keys.SYMBOLS, "BTCUSDT", n)
    pipe.execute()
    # Commands inside a script are slow-logged too: only log what takes over 5 ms, so the
    # storm's own script calls show and the inner commands cost nothing extra.
    r.config_set("slowlog-log-slower-than", 5000)
    r.config_set("slowlog-max-len", 10_000)
    r.slowlog_reset()
    matcher = Matcher(r)
    t0 = time.perf_counter()
    nids = matcher.on_price("BTCUSDT", n + 1, int(time.time() * 1000))
    elapsed = time.perf_counter() - t0
    calls = [e["duration"] for e in r.slowlog_get(10_000) if _command(e).startswith("EVALSHA")]
    r.config_set("slowlog-log-slower-than", 10_000)
    slow = sum(len(f["items"].split(",")) for _, f in r.xrange(keys.FIRED))
    assert len(nids) == len(set(nids)) == n == slow, "storm lost or duplicated"
    assert r.hlen(keys.SYMBOLS) == 0
    return {
        "alerts": n, "seconds": elapsed, "notifications_per_s": n / elapsed,
        "script_calls": len(nids) // matcher.batch + 1,
        "longest_call_ms": max(calls, default=0) / 1000,
    }


def run(sizes, ticks, storm_size):
    with tempfile.TemporaryDirectory(prefix="tb-bench-") as data_dir:
        return _run(data_dir, sizes, ticks, storm_size)


def _run(data_dir, sizes, ticks, storm_size):
    process, url = redisd.start(data_dir, appendonly=False)
    try:
        r = redis.Redis.from_url(url, decode_responses=True)
        rng = random.Random(42)
        floor = ping_run(r)
        print(f"round-trip floor (PING, same client): median {floor['median_ms']:.3f} ms, "
              f"p99 {floor['p99_ms']:.3f} ms; 'server' is the script's own time in Redis")
        print_header()
        rows = []
        for n in sizes:
            r.flushall()
            t0 = time.perf_counter()
            load(r, n, rng)
            loaded = time.perf_counter() - t0
            row = {"alerts": n, "load_s": loaded, "memory": r.info("memory")["used_memory_human"]}
            row["indexed"] = indexed_run(r, ticks, rng)
            row["naive"] = naive_run(r, max(3, min(500, 2_000_000 // n)), rng)
            rows.append(row)
            print_row(row)
        result = {"ping": floor, "sizes": rows,
                  "storm": storm(r, storm_size) if storm_size else None}
        if result["storm"]:
            print_storm(result["storm"])
        return result
    finally:
        redisd.stop(process)


def print_header():
    print(f"{'alerts':>9} | {'indexed median':>14} {'p99':>8} {'server':>8} {'ticks/s':>9} | "
          f"{'naive median':>12} {'p99':>9} {'ticks/s':>8} | load")


def print_row(row):
    i, nv = row["indexed"], row["naive"]
    print(f"{row['alerts']:>9,} | {i['median_ms']:>11.3f} ms {i['p99_ms']:>5.3f} ms "
          f"{i['server_us']:>5.1f} µs {i['ticks_per_s']:>9,.0f} | {nv['median_ms']:>9.2f} ms "
          f"{nv['p99_ms']:>6.1f} ms {nv['ticks_per_s']:>8,.1f} | {row['load_s']:.1f} s "
          f"{row['memory']}", flush=True)


def print_storm(s):
    print(f"\nfire storm: {s['alerts']:,} alerts fired by one tick in {s['seconds']:.2f} s = "
          f"{s['notifications_per_s']:,.0f} notifications/s "
          f"({s['script_calls']} script calls, longest {s['longest_call_ms']:.1f} ms)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--ticks", type=int, default=20_000)
    parser.add_argument("--storm", type=int, default=100_000)
    args = parser.parse_args()
    result = run([int(s) for s in args.sizes.split(",")], args.ticks, args.storm)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
