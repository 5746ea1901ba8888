"""Matching benchmark: per-tick cost with 1k..1M armed alerts, a naive baseline, a mix of
every alert kind, a fire storm (bench/storm.py: with and without the append-only file and a
subscribed hub), and the ticks one listener sustains from a loopback feed (bench/sustained.py).

Runs against a private redis-server (devtools/redisd.py); the index is loaded directly, not
through SQL. Prints a table, then the figures as JSON on the last line.
    python bench/matching.py [--sizes 1000,10000] [--ticks 20000] [--storm 100000]
                             [--mix 1000,1000000] (--mix '' leaves the mix out)
"""

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import storm  # noqa: E402
import sustained  # noqa: E402

from devtools import redisd  # noqa: E402
from webapp import keys  # noqa: E402
from webapp.alerts import index as alert_index  # noqa: E402
from webapp.alerts.index import WINDOWS_S, fmt_num, idx_key, pack_row  # noqa: E402
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
        pipe.hset(keys.alerts(symbol), i, pack_row({
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
            sym = sym.strip("{}")
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


# -- the mix: every kind at once ------------------------------------------------------------
MIX_KINDS = ("above", "below", "crossing_up", "crossing_down", "crossing", "pct_up",
             "pct_down", "channel_exit", "channel_enter", "volume_above")
MIX_STEP_MS = 50  # trade time between quiet ticks: 20k ticks span ~17 min, so windows slide
MIX_CHECK = 2000  # alerts loaded both ways to check the fast loader against index()


def far(rng, p, side=None):
    """A level 5 % to 2x away from p, above or below."""
    up = rng.random() < 0.5 if side is None else side == "above"
    return p * (rng.uniform(1.05, 2.0) if up else rng.uniform(0.5, 0.95))


def channel_away(rng, p):
    """(low, high) wholly above or below p, at least 5 % off."""
    if rng.random() < 0.5:
        low = far(rng, p, "above")
        return low, low * rng.uniform(1.01, 1.3)
    high = far(rng, p, "below")
    return high * rng.uniform(0.7, 0.99), high


def mix_levels(kind, rng, p):
    """(target, high, window_s) of a kind, none near p."""
    if kind in ("pct_up", "pct_down"):
        return rng.uniform(3, 50), None, rng.choice(WINDOWS_S)
    if kind == "channel_exit" and rng.random() < 0.5:  # around the price, bounds far
        return far(rng, p, "below"), far(rng, p, "above"), None
    if kind.startswith("channel"):
        return (*channel_away(rng, p), None)
    if kind == "volume_above":
        return rng.uniform(1e6, 1e9), None, None
    return far(rng, p, {"above": "above", "below": "below"}.get(kind)), None, None


def mix_alerts(n, rng):
    """n alerts as index() takes them: kinds in turn on each symbol, a third recurring and
    half of those with a cooldown."""
    for i in range(1, n + 1):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        kind = MIX_KINDS[(i // len(SYMBOLS)) % len(MIX_KINDS)]
        target, high, window_s = mix_levels(kind, rng, base_price(symbol))
        recurring = i % 3 == 0
        buffer = (0.5 if window_s else target * 0.001) if recurring else 0.0
        yield SimpleNamespace(
            id=i, user_id=i % 5000, symbol=symbol, condition=kind, target=target, high=high,
            window_s=window_s, mode="recurring" if recurring else "once", buffer=buffer,
            buffer_is_pct=False, cooldown_s=300 if i % 6 == 0 else 0, expires_at=None,
            note="", active=True)


def in_use(a):
    """The tb:inuse fields an alert counts in (USES in webapp/alerts/scripts.py)."""
    fields = [str(a.window_s)] if a.window_s else []
    fields += ["x"] if a.condition.startswith("crossing") else []
    fields += ["ch"] if a.condition.startswith("channel") else []
    return fields + (["cd"] if a.cooldown_s else [])


def load_mix(r, alerts):
    """What index() writes per alert, pipelined: its row, the set start() names, the counts."""
    pipe = r.pipeline(transaction=False)
    sets, counts, uses, where = {}, {}, {}, {}
    for n, a in enumerate(alerts, start=1):
        where[a.id] = a.symbol
        pipe.hset(keys.alerts(a.symbol), a.id, pack_row({
            "user_id": a.user_id, "symbol": a.symbol, "condition": a.condition,
            "target": fmt_num(a.target), "mode": a.mode,
            "rearm": fmt_num(alert_index.rearm_threshold(a)), "expires_at": 0,
            "cooldown_ms": a.cooldown_s * 1000, "high": "" if a.high is None else fmt_num(a.high),
            "window_s": a.window_s or "", "note": a.note}))
        suffix, score = alert_index.start(a)
        sets.setdefault(keys.index(a.symbol, suffix), {})[a.id] = score
        counts[a.symbol] = counts.get(a.symbol, 0) + 1
        for field in in_use(a):
            used = uses.setdefault(a.symbol, {})
            used[field] = used.get(field, 0) + 1
        if n % LOAD_CHUNK == 0:
            pipe.execute()
    for key, members in sets.items():
        pipe.zadd(key, members)
    for symbol, used in uses.items():
        pipe.hset(keys.kinds_in_use(symbol), mapping=used)
    pipe.hset(keys.SYMBOLS, mapping=counts)
    pipe.hset(keys.ALERT_SYMBOLS, mapping=where)
    pipe.execute()


def snapshot(r):
    dump = {"hash": r.hgetall, "zset": lambda k: r.zrange(k, 0, -1, withscores=True)}
    return {k: dump[r.type(k)](k) for k in r.scan_iter() if not k.startswith("tb:alerts:version:")}


def check_mix_loader(r):
    """The fast loader must write exactly what index() does (a sample, both ways)."""
    alerts = list(mix_alerts(MIX_CHECK, random.Random(7)))
    r.flushall()
    for a in alerts:
        alert_index.index(a, r)
    slow = snapshot(r)
    r.flushall()
    load_mix(r, alerts)
    if snapshot(r) != slow:
        raise SystemExit("bench: the mix loader no longer writes what index() writes")


def mix_run(r, ticks, rng):
    """Quiet ticks on random symbols, prices wandering within 0.5 %, trade time moving on."""
    matcher, prices = Matcher(r), {}
    ts = int(time.time() * 1000)

    def tick(symbol):
        base = base_price(symbol)
        p = prices.get(symbol, base) * (1 + rng.gauss(0, 0.0005))
        prices[symbol] = min(max(p, base * 0.995), base * 1.005)
        return matcher.on_price(symbol, prices[symbol], ts)

    for symbol in SYMBOLS:  # the first trade settles each symbol's crossings and channels
        ts += MIX_STEP_MS
        assert not tick(symbol)
    for _ in range(1000):
        ts += MIX_STEP_MS
        assert not tick(rng.choice(SYMBOLS))
    r.config_resetstat()
    samples = []
    started = time.perf_counter()
    for _ in range(ticks):
        ts += MIX_STEP_MS
        symbol = rng.choice(SYMBOLS)
        t0 = time.perf_counter()
        fired = tick(symbol)
        samples.append(time.perf_counter() - t0)
        assert not fired, "a mix tick fired: an alert was loaded near the price"
    return summary(samples, time.perf_counter() - started) | {"server_us": server_us_per_call(r)}


def windows_per_symbol(r):
    """Move windows the matcher keeps per symbol: at 1k, 2 move alerts a symbol use 2 of 6."""
    used = [sum(f.isdigit() for f in r.hkeys(keys.kinds_in_use(s))) for s in SYMBOLS]
    return sum(used) / len(used)


def mix(r, sizes, ticks, rng, floor):
    check_mix_loader(r)
    print_mix_header(floor)
    rows = []
    for n in sizes:
        r.flushall()
        t0 = time.perf_counter()
        load_mix(r, mix_alerts(n, rng))
        row = {"alerts": n, "load_s": time.perf_counter() - t0,
               "memory": r.info("memory")["used_memory_human"],
               "windows_per_symbol": windows_per_symbol(r)}
        row["ticks"] = mix_run(r, ticks, rng)
        rows.append(row)
        print_mix_row(row)
    growth = mix_growth(rows[0], rows[-1])
    print_mix_growth(growth, floor)
    # the smallest size keeps fewer windows a symbol: growth also from the first size that
    # keeps as many as the largest, so the alert count alone is compared
    most = rows[-1]["windows_per_symbol"]
    same = next(row for row in rows if row["windows_per_symbol"] >= most - 0.5)
    same_windows = mix_growth(same, rows[-1]) if same not in (rows[0], rows[-1]) else None
    if same_windows:
        print_mix_growth(same_windows, floor, "same windows a symbol")
    return {"sizes": rows, "growth": growth, "growth_same_windows": same_windows}


def mix_growth(first, last):
    ratios = {f"{k}_x": last["ticks"][k] / first["ticks"][k]
              for k in ("median_ms", "p99_ms", "server_us")}
    return ratios | {"from": first["alerts"], "to": last["alerts"]}


def run(sizes, ticks, storm_size, mix_sizes=()):
    with tempfile.TemporaryDirectory(prefix="tb-bench-") as data_dir:
        return _run(data_dir, sizes, ticks, storm_size, mix_sizes)


def _run(data_dir, sizes, ticks, storm_size, mix_sizes):
    process, url = redisd.start(data_dir, port=redisd.free_port(), appendonly=False)
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
        result = {"ping": floor, "sizes": rows}
        result["mix"] = mix(r, mix_sizes, ticks, rng, floor) if mix_sizes else None
        if storm_size:
            print()
            result["storm"] = storm.variants(url, storm_size)
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


def print_mix_header(floor):
    print("\nmix: every kind in roughly equal shares (moves over the six windows; a third "
          "recurring, a sixth with a cooldown), 100 symbols, none near the price; "
          f"PING floor median {floor['median_ms']:.3f} ms, p99 {floor['p99_ms']:.3f} ms")
    print(f"{'alerts':>9} | {'median':>9} {'p99':>8} {'server':>8} {'ticks/s':>9} | "
          "windows/symbol | load")


def print_mix_row(row):
    t = row["ticks"]
    print(f"{row['alerts']:>9,} | {t['median_ms']:>6.3f} ms {t['p99_ms']:>5.3f} ms "
          f"{t['server_us']:>5.1f} µs {t['ticks_per_s']:>9,.0f} | "
          f"{row['windows_per_symbol']:>14.1f} | {row['load_s']:.1f} s {row['memory']}", flush=True)


def print_mix_growth(g, floor, why=""):
    print(f"growth {g['from']:,} -> {g['to']:,} alerts{f' ({why})' if why else ''}: "
          f"median x{g['median_ms_x']:.2f}, "
          f"p99 x{g['p99_ms_x']:.2f}, server x{g['server_us_x']:.2f} (target <= 2x); "
          f"PING floor median {floor['median_ms']:.3f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--ticks", type=int, default=20_000)
    parser.add_argument("--storm", type=int, default=100_000)
    parser.add_argument("--mix", default="1000,10000,100000,1000000")
    parser.add_argument("--no-sustained", dest="sustained", action="store_false")
    args = parser.parse_args()
    result = run([int(s) for s in args.sizes.split(",")], args.ticks, args.storm,
                 [int(s) for s in args.mix.split(",") if s])
    if args.sustained:
        print()
        result["sustained"] = sustained.report(sustained.run())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
