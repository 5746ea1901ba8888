"""Events through the API: POST /api/v1/events per second (single and batched) and from the
POST to the user's SSE stream, against gunicorn with the gevent worker as `make run` serves it.

The RQ worker is not running: the figures are the web side (validate, store in the inbox,
publish, queue the slow steps). The framework floor, a bare Flask JSON endpoint under the same
gunicorn gevent worker (bench/floor_app.py), is measured in the same run with the same client.
The web worker's CPU time per request is read from /proc for both (on a shared, loaded machine
it moves far less than requests/s). Prints a table, then the figures as JSON on the last line.
    python bench/events.py [--single 2000] [--batches 20] [--e2e 300] [--concurrency 16]
"""

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sse_common as common  # noqa: E402

from webapp.notify import service_tokens  # noqa: E402

USERS = 50
BURST = re.compile(rb"burst-(\d{6})-end")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(master_pid):
    """CPU seconds (user + system) the gunicorn master's workers have used so far: unlike
    requests/s, a figure the other work on a shared, loaded machine barely moves."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    total = 0
    for pid in children:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / TICK


def per_request_us(master_pid, used_before, count):
    return round((cpu_s(master_pid) - used_before) / count * 1e6)


def event(uid, title):
    return {"type": "ORDER_EXECUTED", "user_id": uid, "title": title,
            "message": "Filled 0.5 BTC at 65000", "data": {"qty": 0.5, "price": 65000}}


async def post_all(session, url, headers, bodies, concurrency):
    """POST every body, `concurrency` at a time; (seconds, [request latencies in ms])."""
    gate, latencies = asyncio.Semaphore(concurrency), []

    async def one(body):
        async with gate:
            start = time.perf_counter()
            async with session.post(url, json=body, headers=headers) as response:
                await response.read()
                if response.status != 202:
                    raise SystemExit(f"unexpected {response.status}: {await response.text()}")
            latencies.append((time.perf_counter() - start) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(one(b) for b in bodies))
    return time.perf_counter() - start, sorted(latencies)


async def seen_all(client, count):
    """Read the stream until every burst marker arrived (concurrent posts land in any order)."""
    seen, buffer = set(BURST.findall(client.tail)), client.tail
    while len(seen) < count:
        buffer = buffer[-32:] + await client.reader.read(65536)
        seen.update(BURST.findall(buffer))
    return seen


async def end_to_end(session, url, headers, port, uid, cookie, count, concurrency):
    """Latency POST -> SSE frame, one at a time; then a burst's events/s into the stream."""
    client = common.SseClient(uid)
    await client.connect(port, "/stream", cookie, ready=b"retry:")
    latencies = []
    for i in range(count):
        marker = f"e2e-{i:06d}-end".encode()
        start = time.perf_counter()
        async with session.post(url, json=event(uid, marker.decode()), headers=headers) as r:
            await r.read()
        latencies.append((await asyncio.wait_for(client.wait_for(marker), 10) - start) * 1000)
    bodies = [event(uid, f"burst-{i:06d}-end") for i in range(count)]
    start = time.perf_counter()
    sent = asyncio.ensure_future(post_all(session, url, headers, bodies, concurrency))
    await asyncio.wait_for(seen_all(client, count), 60)
    await sent
    burst = count / (time.perf_counter() - start)
    client.close()
    return sorted(latencies), burst


async def floor(args, port, pid):
    """Single events/s against the bare endpoint, as the app's singles are measured."""
    url = f"http://127.0.0.1:{port}/api/v1/events"
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await post_all(session, url, {}, [event(1, "warm-up")] * 100, args.concurrency)
        bodies = [event(1, f"single {i}") for i in range(args.single)]
        used = cpu_s(pid)
        seconds, latencies = await post_all(session, url, {}, bodies, args.concurrency)
    return {"floor_events_per_s": round(args.single / seconds),
            "floor_request_p50_ms": round(statistics.median(latencies), 2),
            "floor_cpu_us_per_request": per_request_us(pid, used, args.single)}


def measure_floor(args, tmp):
    port = common.free_port()
    server = common.gunicorn(Path(sys.executable).parent, "floor_app:app", port, {},
                             tmp / "floor.log", cwd=Path(__file__).resolve().parent)
    try:
        return asyncio.run(floor(args, port, server.pid))
    finally:
        common.stop(server)


async def run(args, port, pid, token, users):
    url = f"http://127.0.0.1:{port}/api/v1/events"
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    # made before any request: making many batches takes seconds, and a connection idle that
    # long (past gunicorn's keep-alive of 2 s) is closed under the client reusing it
    warm = [event(random.choice(users)[0], "warm-up") for _ in range(100)]
    singles = [event(random.choice(users)[0], f"single {i}") for i in range(args.single)]
    batches = [[event(random.choice(users)[0], f"batch {b}.{i}") for i in range(1000)]
               for b in range(args.batches)]
    async with aiohttp.ClientSession(connector=connector) as session:
        await post_all(session, url, headers, warm, args.concurrency)
        used = cpu_s(pid)
        single_s, single_lat = await post_all(session, url, headers, singles, args.concurrency)
        single_cpu = per_request_us(pid, used, args.single)
        used = cpu_s(pid)
        batch_s, batch_lat = await post_all(session, url, headers, batches,
                                            min(args.concurrency, 4))
        batch_cpu = per_request_us(pid, used, args.batches)
        uid, cookie = users[0]
        e2e_lat, burst = await end_to_end(session, url, headers, port, uid, cookie, args.e2e,
                                          args.concurrency)
    return {
        "single_events_per_s": round(args.single / single_s),
        "single_request_p50_ms": round(statistics.median(single_lat), 2),
        "single_cpu_us_per_request": single_cpu,
        "batched_events_per_s": round(args.batches * 1000 / batch_s),
        "batched_cpu_events_per_s": round(1000 / batch_cpu * 1e6),
        "batch_of_1000_p50_ms": round(statistics.median(batch_lat), 1),
        "e2e_post_to_sse_p50_ms": round(statistics.median(e2e_lat), 2),
        "e2e_post_to_sse_p95_ms": round(common.percentile(e2e_lat, 95), 2),
        "e2e_burst_events_per_s": round(burst),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--e2e", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        redis_process, redis_url = common.start_redis(tmp / "redis")
        db_url = f"sqlite:///{tmp / 'bench.db'}"
        app, users = common.make_users(db_url, redis_url, USERS)
        with app.app_context():
            token = service_tokens.create("bench")[1]
        port = common.free_port()
        env = {"DATABASE_URL": db_url, "REDIS_URL": redis_url, "SECRET_KEY": common.SECRET,
               "INSTANCE_PATH": str(tmp)}
        server = common.gunicorn(Path(sys.executable).parent, "wsgi:app", port, env,
                                 tmp / "gunicorn.log")
        try:
            figures = measure_floor(args, tmp)
            figures.update(asyncio.run(run(args, port, server.pid, token, users)))
        except Exception:
            print((tmp / "gunicorn.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            common.stop(server)
            common.stop(redis_process)
    figures["single_share_of_floor"] = round(
        figures["single_events_per_s"] / figures["floor_events_per_s"], 3)
    figures["single_cpu_share_of_floor"] = round(
        figures["floor_cpu_us_per_request"] / figures["single_cpu_us_per_request"], 3)
    for name, value in figures.items():
        print(f"{name:28} {value}")
    print(f"single events: {figures['single_share_of_floor']:.1%} of the framework floor "
          f"({figures['single_cpu_share_of_floor']:.1%} by the web worker's CPU per request; "
          f"target >= 50 %); batched: {figures['batched_events_per_s']:,} events/s, "
          f"{figures['batched_cpu_events_per_s']:,} per CPU second of the web worker "
          f"(target >= 100,000)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
