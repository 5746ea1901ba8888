"""What the metrics cost a tick: the listener's and the matcher's metric calls alone, then a
whole tick (Matcher.on_price on a private redis-server, 1000 armed alerts, none met) with and
without them, in one process (the default registry) and with PROMETHEUS_MULTIPROC_DIR set
(the values in mmap'd files, as under `make run`).

Each mode runs in a child process, because prometheus_client picks its value store when
imported. With and without alternate in rounds, so a busy machine weighs on both alike.
Prints a table, then the figures as JSON on the last line.
    python bench/metrics.py [--ticks 3000] [--rounds 7] [--calls 200000]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SYMBOLS = [f"SYM{i:03d}USDT" for i in range(100)]
ALERTS = 1000


def calls_only(n):
    """µs per tick of the metric calls a tick makes: received, matched, one call's time
    (and, every FLUSH_S, the push of the counts to the metrics)."""
    from time import perf_counter

    from webapp.core import metrics

    started = perf_counter()
    for i in range(n):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        metrics.tick_received(symbol)
        t0 = perf_counter()
        metrics.matcher_call(perf_counter() - t0)
        metrics.tick_matched(symbol, "price", [])
    return (perf_counter() - started) / n * 1e6


def _switch(metrics, on, saved):
    """The metric calls, or stand-ins that count nothing: the tick as it was before them."""
    if on:
        metrics.tick_received, metrics.tick_matched, metrics.matcher_call = saved
    else:
        metrics.tick_received = lambda symbol: None
        metrics.tick_matched = lambda symbol, kind, fired: fired
        metrics.matcher_call = lambda seconds: None


def _load(r):
    from webapp import keys
    from webapp.alerts.index import fmt_num, idx_key, pack_row

    pipe = r.pipeline(transaction=False)
    for i in range(1, ALERTS + 1):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        pipe.hset(keys.alerts(symbol), i, pack_row({
            "user_id": i, "symbol": symbol, "condition": "above", "target": fmt_num(1e6 + i),
            "mode": "once", "rearm": fmt_num(1e6 + i), "expires_at": 0, "note": ""}))
        pipe.zadd(idx_key(symbol, "above"), {i: 1e6 + i})
    pipe.execute()


def _ticks(matcher, metrics, n, start_ms):
    """Median µs of one tick as the listener makes it: counted, then matched."""
    samples = []
    for i in range(n):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        t0 = time.perf_counter()
        metrics.tick_received(symbol)
        matcher.on_price(symbol, 100.0 + (i % 7), start_ms + i)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


def whole_ticks(ticks, rounds):
    import redis

    from devtools import redisd
    from webapp.core import metrics
    from worker.matcher import Matcher

    saved = (metrics.tick_received, metrics.tick_matched, metrics.matcher_call)
    with tempfile.TemporaryDirectory() as data_dir:
        process, url = redisd.start(Path(data_dir), appendonly=False)
        try:
            r = redis.Redis.from_url(url, decode_responses=True)
            _load(r)
            matcher, ms = Matcher(r), int(time.time() * 1000)
            _ticks(matcher, metrics, ticks, ms)  # warm: the script loaded, the keys cached
            on, off = [], []
            for n in range(1, rounds + 1):  # which goes first alternates too
                order = ((True, on), (False, off)) if n % 2 else ((False, off), (True, on))
                for state, out in order:
                    ms += ticks  # every tick newer than the last: none is dropped as stale
                    _switch(metrics, state, saved)
                    out.append(_ticks(matcher, metrics, ticks, ms))
            _switch(metrics, True, saved)
        finally:
            redisd.stop(process)
    return statistics.median(on), statistics.median(off)


def child(args):
    figures = {"calls_us": calls_only(args.calls)}
    figures["tick_with_us"], figures["tick_without_us"] = whole_ticks(args.ticks, args.rounds)
    print(json.dumps(figures))


def run_mode(mode, args):
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with tempfile.TemporaryDirectory() as prom:
        if mode == "multiprocess":
            env["PROMETHEUS_MULTIPROC_DIR"] = prom
        out = subprocess.run([sys.executable, __file__, "--child", "--ticks", str(args.ticks),
                              "--rounds", str(args.rounds), "--calls", str(args.calls)],
                             env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    results = {mode: run_mode(mode, args) for mode in ("single", "multiprocess")}
    print(f"{'mode':<14}{'calls/tick':>12}{'tick with':>12}{'tick without':>14}{'added':>9}")
    for mode, f in results.items():
        added = f["tick_with_us"] - f["tick_without_us"]
        f["added_pct"] = 100 * added / f["tick_without_us"]
        print(f"{mode:<14}{f['calls_us']:>10.2f}µs{f['tick_with_us']:>10.1f}µs"
              f"{f['tick_without_us']:>12.1f}µs{f['added_pct']:>8.1f}%")
    print(json.dumps(results))
    return None


if __name__ == "__main__":
    main()
