"""SSE fan-out: 1k, 5k and 10k clients, one event to every user, over 1 and 2 web processes.

Tickerbell (one pub/sub connection per process subscribed to the users it serves, events
written by the inbox's Lua script) on one gunicorn gevent worker and on two (each on its own
port, the clients split between them, as behind a load balancer), side by side with
Flask-SSE 1.0 (a pub/sub connection per client, one PUBLISH per user) on one worker.
Flask-SSE lives only in bench/.venv-flasksse, made on first run.

Figures per run: delivery latency p50/p99 from publishing a user's event (its chunk of
CHUNK, pipelined) to the event read by its client (the whole burst published at once), how
long publishing took and when the last event arrived (from the first publish), the CPU the
web workers used meanwhile (less shaken by a loaded machine than latency), their
RSS growth per connection, and the Redis connections open. The clients are read by a forked
process (sse_common.ForkedReader), so their own cost is not counted; still, the publisher,
that reader, the servers and Redis share this machine's cores.
    python bench/sse_fanout.py [--sizes 1000 5000 10000 | --users N] [--processes 1 2]
                               [--only tickerbell|flasksse]
"""

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import sse_common as common  # puts the project on sys.path
from sse_common import SseClient, percentile

from webapp import keys
from webapp.inbox import service as inbox

BENCH = Path(__file__).resolve().parent
FLASKSSE_VENV = BENCH / ".venv-flasksse"
FLASKSSE_PINS = ["flask-sse==1.0.0", "flask==3.1.3", "redis==8.1.0", "hiredis==3.5.0",
                 "gunicorn==27.0.1", "gevent==26.9.0", "packaging==26.3"]
CHUNK = 500  # events per pipelined publish


def flasksse_env():
    """bench/.venv-flasksse with Flask-SSE 1.0 and the same server stack as ours."""
    python = FLASKSSE_VENV / "bin" / "python"
    done = FLASKSSE_VENV / ".installed"
    if not done.exists() or done.read_text() != " ".join(FLASKSSE_PINS):
        subprocess.run([sys.executable, "-m", "venv", str(FLASKSSE_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *FLASKSSE_PINS], check=True)
        done.write_text(" ".join(FLASKSSE_PINS))
    return FLASKSSE_VENV / "bin"


class Target:
    """How to serve, connect to and publish for one implementation."""

    def __init__(self, name, bin_dir, app_spec, cwd, ready, marker):
        self.name, self.bin_dir, self.app_spec, self.cwd = name, bin_dir, app_spec, cwd
        self.ready, self.marker = ready, marker

    def path(self, client):
        return "/stream" if self.name == "tickerbell" else f"/stream?channel=user.{client.uid}"


def tickerbell():
    return Target("tickerbell", Path(sys.executable).parent, "wsgi:app", common.ROOT,
                  b"event: unread", b"event: notification")


def flasksse():
    return Target("flasksse", flasksse_env(), "flasksse_app:app", BENCH, None,
                  b"event:notification")


def publish(target, r, users):
    """Publish one event per user in pipelined chunks; {uid: perf_counter when sent}."""
    sent = {}
    for start in range(0, len(users), CHUNK):
        chunk = users[start:start + CHUNK]
        now = time.perf_counter()
        sent.update((uid, now) for uid, _ in chunk)
        if target.name == "tickerbell":
            inbox.store_many([{"user_id": uid, "type": "PRICE_ALERT", "title": "BTCUSDT above 1",
                               "message": "fan-out"} for uid, _ in chunk], redis=r)
        else:
            with r.pipeline(transaction=False) as pipe:
                for uid, _ in chunk:
                    pipe.publish(f"user.{uid}", json.dumps({
                        "data": {"title": "BTCUSDT above 1", "message": "fan-out"},
                        "type": "notification"}))
                pipe.execute()
    return sent


def web_connections(r):
    return sum(1 for c in r.client_list() if c.get("name") != "bench")


async def subscribed(r, count, timeout=60):
    """Flask-SSE sends nothing until the first event: wait for its subscriptions instead.

    Returns how many subscribed; fewer than `count` when the server could not take them all
    (it needs two descriptors per client, one of them a Redis connection).
    """
    deadline, seen, last_change = time.monotonic() + timeout, -1, time.monotonic()
    while (now := len(r.pubsub_channels("user.*"))) < count and time.monotonic() < deadline:
        if now != seen:
            seen, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > 15:
            break  # stuck: no new subscription for 15 s
        await asyncio.sleep(0.2)
    return len(r.pubsub_channels("user.*"))


async def run_size(target, users, ports, r, pids):
    """Clients spread over the processes (client i on port i mod processes)."""
    clients = [SseClient(uid) for uid, _ in users]
    cookies = dict(users)
    base = sum(common.rss_kb(pid) for pid in pids)
    started = time.perf_counter()
    retried = sum(await asyncio.gather(*(
        common.connect_all(clients[i::len(ports)], port, target.path,
                           lambda c: cookies[c.uid], target.ready)
        for i, port in enumerate(ports))))
    note = f"{retried} streams connected again (503 while set-up queued)" if retried else ""
    if target.ready is None:
        ready = await subscribed(r, len(users))
        if ready < len(users):
            note = f"only {ready} of {len(users)} streams opened (fd limit: 2 per client)"
    connect_s = time.perf_counter() - started
    await asyncio.sleep(1.0)  # let the workers settle before reading their memory
    rss = sum(common.rss_kb(pid) for pid in pids)
    conns = web_connections(r)
    reader = common.ForkedReader(clients, target.marker)
    cpu, start = sum(common.cpu_ms(pid) for pid in pids), time.perf_counter()
    sent = publish(target, r, users)
    publish_ms = (time.perf_counter() - start) * 1000
    received = reader.result()
    cpu = sum(common.cpu_ms(pid) for pid in pids) - cpu  # the workers' CPU for the burst
    for c in clients:
        c.close()
    latencies = sorted((t - sent[uid]) * 1000 for uid, t in received.items())
    return {"impl": target.name, "procs": len(ports), "clients": len(users),
            "delivered": len(received),
            "p50_ms": round(percentile(latencies, 50), 1) if latencies else None,
            "p99_ms": round(percentile(latencies, 99), 1) if latencies else None,
            "kb_per_conn": round((rss - base) / len(users), 1), "rss_mb": round(rss / 1024, 1),
            "publish_ms": round(publish_ms), "cpu_ms": round(cpu),
            "last_ms": round((max(received.values()) - start) * 1000) if received else None,
            "redis_conns": conns, "connect_s": round(connect_s, 1), "note": note}


def forget_earlier_runs(r):
    """What an earlier size or server left behind goes; the users' sessions stay (their
    cookies are made once, and a stream without its session answers 401)."""
    sessions_kept = (keys.session(""), keys.user_sessions(""))
    for key in r.scan_iter(count=1000):
        if not key.startswith(sessions_kept):
            r.delete(key)


def serve_and_run(target, size, all_users, redis_url, tmp, processes=1):
    r = redis.Redis.from_url(redis_url, decode_responses=True, client_name="bench")
    forget_earlier_runs(r)
    ports = [common.free_port() for _ in range(processes)]
    env = {"DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}", "REDIS_URL": redis_url,
           "SECRET_KEY": common.SECRET, "STREAM_KEEPALIVE_S": "60", "INSTANCE_PATH": str(tmp)}
    arbiters = []
    try:
        for i, port in enumerate(ports):
            arbiters.append(common.gunicorn(target.bin_dir, target.app_spec, port, env,
                                            tmp / f"{target.name}{i}.log", cwd=target.cwd))
        pids = [common.worker_pid(arbiter) for arbiter in arbiters]
        for i, port in enumerate(ports):
            asyncio.run(warm_up(target, all_users[i], port))
        return asyncio.run(run_size(target, all_users[:size], ports, r, pids))
    finally:
        for arbiter in arbiters:
            common.stop(arbiter)
        r.close()


async def warm_up(target, user, port):
    """One stream opened and closed first, so imports and templates are not counted."""
    client = SseClient(user[0])
    await client.connect(port, target.path(client), user[1], target.ready)
    client.close()
    await asyncio.sleep(0.5)


def table(rows):
    head = (f"{'impl':<11}{'procs':>6}{'clients':>8}{'delivered':>10}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'publish ms':>11}{'last ms':>8}{'CPU ms':>8}"
            f"{'KB/conn':>9}{'RSS MB':>8}{'redis conns':>12}{'connect s':>10}")
    lines = [head]
    for row in rows:
        lines.append(f"{row['impl']:<11}{row['procs']:>6}{row['clients']:>8}{row['delivered']:>10}"
                     f"{row['p50_ms'] or '-':>9}{row['p99_ms'] or '-':>9}"
                     f"{row['publish_ms']:>11}{row['last_ms'] or '-':>8}{row['cpu_ms']:>8}"
                     f"{row['kb_per_conn']:>9}"
                     f"{row['rss_mb']:>8}{row['redis_conns']:>12}{row['connect_s']:>10}"
                     + (f"  {row['note']}" if row.get("note") else ""))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--users", type=int, help="one size only: one event to N users")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2],
                        help="web processes serving Tickerbell (Flask-SSE runs on one)")
    parser.add_argument("--only", choices=["tickerbell", "flasksse"])
    args = parser.parse_args(argv)
    if args.users:
        args.sizes = [args.users]
    print(f"file descriptor limit: {common.raise_fd_limit()}")
    runs = [(t(), n) for t, counts in ((tickerbell, args.processes), (flasksse, [1]))
            if args.only in (None, t.__name__) for n in counts]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        redis_process, redis_url = common.start_redis(tmp / "redis")
        try:
            db_url = f"sqlite:///{tmp / 'bench.db'}"
            _, users = common.make_users(db_url, redis_url, max(args.sizes))
            for size in args.sizes:
                for target, processes in runs:
                    rows.append(serve_and_run(target, size, users, redis_url, tmp, processes))
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
        finally:
            common.stop(redis_process)
    print()
    print(table(rows))
    print(json.dumps({"sse_fanout": rows}))


if __name__ == "__main__":
    main()
