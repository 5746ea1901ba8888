"""A fire storm: one tick fires n alerts on one symbol. Notifications created per second,
with the append-only file off, on (everysec) and on as `make run` keeps it (fsync before each
answer), alone and with a hub subscribed to every notified user's channel and reading.
    python bench/storm.py [--alerts 100000] [--instructions]
"""

import argparse
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools import redisd  # noqa: E402
from webapp import keys  # noqa: E402
from webapp.alerts.index import idx_key, pack_row  # noqa: E402
from webapp.live.channels import Subscriptions  # noqa: E402
from webapp.live.fanout import Message  # noqa: E402
from webapp.live.link import Link  # noqa: E402
from worker.matcher import Matcher  # noqa: E402

USERS = 1000
LOAD_CHUNK = 10_000
# (name, appendonly, appendfsync, hub subscribed)
VARIANTS = [("no AOF, no hub", "no", "everysec", False),
            ("no AOF, hub", "no", "everysec", True),
            ("AOF everysec, hub", "yes", "everysec", True),
            ("AOF always, hub", "yes", "always", True)]


def load(r, n):
    r.flushall()
    pipe = r.pipeline(transaction=False)
    for i in range(1, n + 1):
        pipe.hset(keys.alerts("BTCUSDT"), i, pack_row({
            "user_id": i % USERS, "symbol": "BTCUSDT", "condition": "above",
            "target": i, "mode": "once", "rearm": i - 0.5, "expires_at": 0, "note": ""}))
        if i % LOAD_CHUNK == 0:
            pipe.execute()
    pipe.zadd(idx_key("BTCUSDT", "above"), {i: i for i in range(1, n + 1)})
    pipe.hset(keys.SYMBOLS, "BTCUSDT", n)
    pipe.execute()


def _command(entry):
    command = entry["command"]
    return (command.decode() if isinstance(command, bytes) else command).upper()


def storm(r, n, loaded=False):
    """Fire n alerts with one tick on `r` as it is configured; the figures."""
    if not loaded:
        load(r, n)
    # Commands inside a script are slow-logged too: only log what takes over 5 ms, so the
    # storm's own script calls show and the inner commands cost nothing extra.
    r.config_set("slowlog-log-slower-than", 5000)
    r.config_set("slowlog-max-len", 10_000)
    r.slowlog_reset()
    matcher = Matcher(r)
    r.config_resetstat()
    cpu = redis_cpu(r)
    t0 = time.perf_counter()
    nids = matcher.on_price("BTCUSDT", n + 1, int(time.time() * 1000))
    elapsed = time.perf_counter() - t0
    calls = [e["duration"] for e in r.slowlog_get(10_000) if _command(e).startswith("EVALSHA")]
    r.config_set("slowlog-log-slower-than", 10_000)
    cpu = redis_cpu(r) - cpu
    script_us = r.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0)
    slow = sum(len(f["items"].split(",")) for _, f in r.xrange(keys.FIRED))
    assert len(nids) == len(set(nids)) == n == slow, "storm lost or duplicated"
    assert r.hlen(keys.SYMBOLS) == 0
    return {
        "alerts": n, "seconds": elapsed, "notifications_per_s": n / elapsed,
        "script_calls": len(nids) // matcher.batch + 1,
        "longest_call_ms": max(calls, default=0) / 1000,
        # Redis's own time a notification: the scripts alone, and its main thread's CPU
        # for the storm (the scripts, reading calls, writing replies and pub/sub messages,
        # the append-only file's writes), which a loaded machine moves less than the wall
        "script_us": script_us / n, "redis_cpu_us": cpu * 1e6 / n,
    }


def redis_cpu(r):
    """Seconds of CPU Redis's main thread has used (user and system)."""
    info = r.info("cpu")
    return info["used_cpu_user_main_thread"] + info["used_cpu_sys_main_thread"]


class Hub:
    """A web process's reader, in a process of its own as a web process is: subscribed to
    every user's channel on the web's own link (webapp/live/link.py), each message read and
    decoded as the web's hub does (webapp/live/fanout.py Message.parse), not fanned out."""

    def __init__(self, url):
        self.url = url
        ready, self.stop = multiprocessing.Event(), multiprocessing.Event()
        self.heard, child = multiprocessing.Pipe(duplex=False)
        self.process = multiprocessing.Process(target=self._read, args=(ready, child))
        self.process.start()
        ready.wait(30)

    def _read(self, ready, out):
        subscriptions = Subscriptions()
        link = Link({"REDIS_URL": self.url}, "bench-hub", subscriptions)
        waits = subscriptions.want(keys.user_channel(uid) for uid in range(USERS))
        counts = {"received": 0}

        def dispatch(channel, raw):
            Message.parse(raw)
            counts["received"] += 1
            if counts["received"] % 1000 == 0:
                out.send((counts["received"], False))

        dropped = False
        try:
            while not self.stop.is_set():
                link.send()
                link.read(dispatch)
                if not ready.is_set() and all(w.is_set() for w in waits):
                    ready.set()  # every channel's subscription is confirmed
                link.wait(0.2)
        except (redis.RedisError, OSError):  # past its output buffer's limit: Redis hung up
            dropped = True
        out.send((counts["received"], dropped))

    def wait(self, n, timeout=60):
        """(messages heard, whether Redis dropped the link) once n arrived or it stopped."""
        deadline, heard = time.monotonic() + timeout, (0, False)
        try:
            while heard[0] < n and time.monotonic() < deadline:
                if self.heard.poll(0.5):
                    heard = self.heard.recv()
            self.stop.set()
            while True:  # its last count, then the end of the pipe as it exits
                heard = self.heard.recv()
        except EOFError:
            pass
        self.process.join(10)
        return heard


def configure(r, appendonly, fsync):
    r.config_set("appendfsync", fsync)
    if r.config_get("appendonly")["appendonly"] != appendonly:
        r.config_set("appendonly", appendonly)  # turning it on rewrites the file first
    while int(r.info("persistence")["aof_rewrite_in_progress"]):
        time.sleep(0.05)


def variants(url, n, counter=None):
    """The storm in every variant on one Redis (the one at `url`), in one run."""
    # no read timeout: under callgrind one script call takes seconds
    r, rows = redis.Redis.from_url(url, decode_responses=True, socket_timeout=None), []
    for name, appendonly, fsync, subscribed in VARIANTS:
        configure(r, appendonly, fsync)
        hub = Hub(url) if subscribed else None
        if counter is not None:
            load(r, n)  # not counted
            counter.start()
        row = {"variant": name, **storm(r, n, loaded=counter is not None)}
        if hub is not None:
            row["hub_received"], row["hub_dropped"] = hub.wait(n)
        if counter is not None:
            row["instructions"] = counter.stop() / n
        rows.append(row)
        print_row(row)
    return rows


class Callgrind:
    """Instructions redis-server runs, counted by valgrind's callgrind: the one figure here
    that other work on the machine does not move (the server runs ~50 times slower)."""

    def __init__(self, data_dir):
        self.out = Path(data_dir) / "callgrind.out"
        self.wrapper = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                        f"--callgrind-out-file={self.out}"]
        self.pid = None

    def _control(self, *args):
        subprocess.run(["callgrind_control", *args, str(self.pid)], check=True,
                       capture_output=True)

    def start(self):
        self._control("--zero")
        self._control("--instr=on")

    def stop(self):
        """The instructions since start()."""
        self._control("--instr=off")
        self._control("--dump")
        newest = max(self.out.parent.glob(f"{self.out.name}*"), key=lambda f: f.stat().st_mtime)
        totals = [line for line in newest.read_text().splitlines()
                  if line.startswith(("summary:", "totals:"))]
        return int(totals[-1].split()[1])


def print_row(s):
    heard = f", hub heard {s['hub_received']:,}" if "hub_received" in s else ""
    if s.get("hub_dropped"):
        heard += " then was dropped"
    print(f"fire storm, {s['variant']:18}: {s['alerts']:,} alerts in {s['seconds']:.2f} s = "
          f"{s['notifications_per_s']:>9,.0f} notifications/s ({s['script_calls']} calls, "
          f"longest {s['longest_call_ms']:.1f} ms{heard}); Redis µs a notification: "
          f"{s['script_us']:.2f} in scripts, {s['redis_cpu_us']:.2f} of CPU"
          + (f", {s['instructions']:,.0f} instructions" if "instructions" in s else ""),
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--instructions", action="store_true",
                        help="run Redis under callgrind and count its instructions a "
                             "notification (slow: try --alerts 20000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tb-storm-") as data_dir:
        counter = Callgrind(data_dir) if args.instructions else None
        process, url = redisd.start(data_dir, appendonly=False, timeout=60,
                                    wrapper=counter.wrapper if counter else ())
        if counter is not None:
            counter.pid = process.pid
        try:
            rows = variants(url, args.alerts, counter)
        finally:
            redisd.stop(process)
    print(json.dumps({"storm": rows}))


if __name__ == "__main__":
    main()
