"""Fire storms on one Redis and on a 3-master Redis Cluster, side by side in one run.

Three symbols, each in a slot of a different master, each with `--alerts` armed alerts of
`--users` users; one tick per symbol fires all of them, the three at once from three
processes (a listener shard each). One Redis runs the matcher in its one-step mode, the
cluster in its two-step mode (worker/outbox.py). Figures: notifications per second of wall
time, and of the busiest Redis process's CPU time (what each master could do on a core of its
own: this machine may have fewer cores than the cluster has processes, which caps the wall
figure, not the design).

`--ceiling` adds a third run on the cluster whose second step is plain pipelined XADD and
SPUBLISH commands, without DELIVER's script and its record of written batches: what the
cluster could do if exactly-once cost nothing. It is a bound, never the product (a retried
batch would be written twice).
    python bench/cluster.py [--alerts 30000] [--users 10000] [--runs 3] [--replicas 1]
                            [--ceiling]
Prints a table, then the figures as JSON on the last line.
"""

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools import rediscluster, redisd  # noqa: E402
from webapp import keys  # noqa: E402
from webapp.alerts.index import idx_key, pack_row  # noqa: E402
from webapp.extensions import data_redis, is_cluster  # noqa: E402
from worker.matcher import Matcher  # noqa: E402
from worker.outbox import COMMITTED_KEPT_MS, Outbox  # noqa: E402

LOAD_CHUNK = 5000


def client(target):
    """A data-plane client: target is a redis:// URL or a list of (host, port) nodes."""
    if isinstance(target, str):
        return data_redis({"REDIS_URL": target, "REDIS_CLUSTER_NODES": []}, socket_timeout=60)
    return data_redis({"REDIS_CLUSTER_NODES": target}, socket_timeout=60)


def symbols_on_every_master(rc, count=3):
    """`count` symbols whose slots belong to different masters."""
    found = {}
    for i in range(10_000):
        symbol = f"S{i}USDT"
        found.setdefault(rc.get_node_from_key(keys.alerts(symbol)).name, symbol)
        if len(found) == count:
            return sorted(found.values())
    raise RuntimeError("fewer masters than symbols")


def load(r, symbols, alerts, users):
    """Each symbol gets `alerts` one-shot `above` alerts, targets 1..alerts."""
    r.flushall()
    next_id = 1
    for symbol in symbols:
        pipe = r.pipeline(transaction=False)
        for i in range(1, alerts + 1):
            pipe.hset(keys.alerts(symbol), next_id + i, pack_row({
                "user_id": (next_id + i) % users + 1, "symbol": symbol, "condition": "above",
                "target": i, "mode": "once", "rearm": i - 0.5, "expires_at": 0, "note": ""}))
            if i % LOAD_CHUNK == 0:
                pipe.execute()
        pipe.zadd(idx_key(symbol, "above"), {next_id + i: i for i in range(1, alerts + 1)})
        pipe.hset(keys.SYMBOLS, symbol, alerts)
        pipe.execute()
        next_id += alerts


class Unguarded(Outbox):
    """Step 2 as plain commands, one XADD and one SPUBLISH a notification, pipelined by
    node: the floor under DELIVER (which is these two and its record, in a script)."""

    def deliver(self, symbol, entry_id, price, ts, notes):
        r, parsed = self.redis, [line.split("\t", 4) for line in notes.split("\n")]
        with r.pipeline(transaction=False) as pipe:
            for uid, _, _, _, body in parsed:
                data, node = '{"user_id":' + body, r.get_node_from_key(keys.replay(uid))
                pipe.execute_command("XADD", keys.replay(uid), "*", "event", "notification",
                                     "data", data, target_nodes=node)
                pipe.execute_command("SPUBLISH", keys.user_channel(uid),
                                     f'{{"event":"notification","data":{data}}}',
                                     target_nodes=node)
            eids = pipe.execute()[::2]
        nids, items = [f"{eid}-{n[0]}" for eid, n in zip(eids, parsed, strict=True)], {}
        for nid, (uid, ntype, alert_id, mode, _) in zip(nids, parsed, strict=True):
            items.setdefault(ntype, []).append(f"{nid}:{alert_id}:{uid}:{mode}")
        commit = [f"{entry_id}:{symbol}", int(time.time() * 1000), COMMITTED_KEPT_MS, price,
                  ts, symbol]
        for ntype, typed in items.items():
            commit += [ntype, ",".join(typed)]
        return nids, commit


def fire(target, symbol, price, barrier, out, unguarded=False):
    r = client(target)
    matcher = Matcher(r)
    if unguarded:
        matcher.outbox = Unguarded(r)
    matcher.on_price(symbol, 0.5, int(time.time() * 1000) - 1000)  # warm: script cached
    barrier.wait()
    t0 = time.perf_counter()
    nids = matcher.on_price(symbol, price, int(time.time() * 1000))
    out.put((symbol, len(nids), len(set(nids)), t0, time.perf_counter()))


def cpu_seconds(nodes):
    """Each Redis process's CPU time so far (user + system)."""
    got = {}
    for host, port in nodes:
        with redis.Redis(host, port, decode_responses=True) as node:
            info = node.info("cpu")
            got[f"{host}:{port}"] = info["used_cpu_user"] + info["used_cpu_sys"]
    return got


def storm(target, nodes, symbols, alerts, users, unguarded=False):
    r = client(target)
    load(r, symbols, alerts, users)
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(len(symbols)), ctx.Queue()
    workers = [ctx.Process(target=fire, args=(target, s, alerts + 1, barrier, out, unguarded))
               for s in symbols]
    cpu0 = cpu_seconds(nodes)
    for w in workers:
        w.start()
    results = [out.get(timeout=600) for _ in workers]
    for w in workers:
        w.join()
    cpu = {node: spent - cpu0[node] for node, spent in cpu_seconds(nodes).items()}
    total = sum(n for _, n, _, _, _ in results)
    assert total == sum(u for _, _, u, _, _ in results) == alerts * len(symbols), results
    fired = sum(len(f["items"].split(",")) for _, f in r.xrange(keys.FIRED))
    assert fired == total, f"slow path got {fired} of {total}"
    wall = max(e for *_, e in results) - min(s for *_, s, _ in results)
    return {"notifications": total, "seconds": wall, "per_s": total / wall,
            "busiest_cpu_s": max(cpu.values()), "per_cpu_s": total / max(cpu.values())}


def wait_cost(rc, master, rounds=2000):
    """A write alone vs a write and WAIT 1 (one replica acknowledged): medians in ms."""
    host, port = master
    key = next(k for k in (f"{{wait{i}}}" for i in range(10_000))
               if rc.get_node_from_key(k).name == f"{host}:{port}")
    alone, waited = [], []
    with redis.Redis(host, port, single_connection_client=True) as node:
        for i in range(rounds):
            t0 = time.perf_counter()
            node.set(key, i)
            t1 = time.perf_counter()
            node.execute_command("WAIT", 1, 1000)
            t2 = time.perf_counter()
            alone.append(t1 - t0)
            waited.append(t2 - t0)
    return statistics.median(alone) * 1000, statistics.median(waited) * 1000


def median_of(runs, field):
    return statistics.median(run[field] for run in runs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alerts", type=int, default=30_000, help="per symbol")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1, help="per master")
    parser.add_argument("--ceiling", action="store_true",
                        help="also the cluster with step 2 unguarded (a bound, not the product)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tb-bench-cluster-") as base:
        process, url = redisd.start(Path(base) / "single", port=redisd.free_port(),
                                    appendonly=False)
        cluster = rediscluster.start(Path(base) / "cluster", replicas_per_master=args.replicas)
        try:
            nodes = [(h, int(p)) for h, p in (n.split(":") for n in cluster.nodes)]
            masters = [(h, int(p)) for h, p in (n.split(":") for n in cluster.masters())]
            rc = client(nodes)
            assert is_cluster(rc)
            symbols = symbols_on_every_master(rc)
            single_node = [("127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0]))]
            figures = {"one_redis": [], "cluster": []} | ({"ceiling": []} if args.ceiling else {})
            for _ in range(args.runs):  # alternated, so drift on a shared machine hits both
                figures["one_redis"].append(
                    storm(url, single_node, symbols, args.alerts, args.users))
                figures["cluster"].append(storm(nodes, nodes, symbols, args.alerts, args.users))
                if args.ceiling:
                    figures["ceiling"].append(
                        storm(nodes, nodes, symbols, args.alerts, args.users, unguarded=True))
            report(figures, args, masters, symbols)
            if args.replicas:
                alone, waited = wait_cost(rc, masters[0])
                print(f"a write: {alone:.3f} ms; a write then WAIT 1: {waited:.3f} ms "
                      "(median, one master and its replica)")
        finally:
            cluster.stop()
            redisd.stop(process)


def report(figures, args, masters, symbols):
    print(f"3 storms at once ({', '.join(symbols)}), {args.alerts} alerts each, "
          f"{args.users} users; {args.runs} runs, medians; {os.cpu_count()} cores here; "
          f"cluster: {len(masters)} masters, {args.replicas} replica(s) each")
    print(f"{'':12} {'notifications/s':>16} {'per busiest Redis CPU-s':>24}")
    out = {}
    for name, runs in figures.items():
        out[name] = {"per_s": median_of(runs, "per_s"), "per_cpu_s": median_of(runs, "per_cpu_s")}
        print(f"{name:12} {out[name]['per_s']:>16,.0f} {out[name]['per_cpu_s']:>24,.0f}")
    wall = out["cluster"]["per_s"] / out["one_redis"]["per_s"]
    capacity = out["cluster"]["per_cpu_s"] / out["one_redis"]["per_cpu_s"]
    print(f"cluster / one Redis: {wall:.2f}x of wall time, {capacity:.2f}x by the busiest "
          "process's CPU (each master on a core of its own)")
    ratios = {"ratio_wall": wall, "ratio_capacity": capacity}
    if "ceiling" in out:
        ratios["ceiling_capacity"] = out["ceiling"]["per_cpu_s"] / out["one_redis"]["per_cpu_s"]
        print(f"ceiling / one Redis: {ratios['ceiling_capacity']:.2f}x by the busiest "
              "process's CPU (step 2 unguarded: a bound, not the product)")
    print(json.dumps(out | ratios))


if __name__ == "__main__":
    main()
