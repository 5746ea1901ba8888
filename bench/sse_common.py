"""Shared set-up for the live-feed benchmarks: Redis, users and cookies, gunicorn, SSE clients."""

import asyncio
import gc
import json
import os
import resource
import select
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webapp import create_app  # noqa: E402
from webapp.accounts import sessions  # noqa: E402
from webapp.extensions import db  # noqa: E402
from webapp.models import User  # noqa: E402

SECRET = "bench-secret-not-for-production"
CONNECT_CONCURRENCY = 500
CONNECT_ATTEMPTS = 5
RECONNECT_PAUSE_S = 2.0  # the EventSource retry delay /stream sends


def raise_fd_limit():
    """10k clients and 10k server sockets: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(data_dir, maxclients=30000):
    """A private redis-server that accepts as many clients as the fd limit allows."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(data_dir), "--maxclients", str(maxclients),
         "--logfile", str(data_dir / "redis.log")], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    client.close()
    return process, url


def make_users(db_url, redis_url, count):
    """The schema and `count` users; returns (app, [(uid, session cookie)])."""
    app = create_app({"SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": redis_url,
                      "SECRET_KEY": SECRET, "INSTANCE_PATH": str(Path(db_url[10:]).parent)})
    with app.app_context():
        db.create_all()
        db.session.execute(db.insert(User), [
            {"email": f"u{i}@bench.example", "password_hash": "!", "session_version": 1}
            for i in range(count)])
        db.session.commit()
        uids = list(db.session.scalars(db.select(User.id).order_by(User.id)))
        db.session.remove()
        sids = [sessions.create(uid) for uid in uids]  # server-side sessions, as a login makes
    # Sessions signed as Flask would sign a login: logging 10k users in is not what we measure.
    signer = app.session_interface.get_signing_serializer(app)
    return app, [(uid, "session=" + signer.dumps({"_user_id": f"{uid}:1", "_fresh": True,
                                                  sessions.SID: sid}))
                 for uid, sid in zip(uids, sids, strict=True)]


def gunicorn(bin_dir, app_spec, port, env, log_path, cwd=ROOT):
    """One gevent worker, as `make run` serves the web process."""
    log = open(log_path, "ab")  # noqa: SIM115 - the process owns it until it exits
    process = subprocess.Popen(
        [str(bin_dir / "gunicorn"), "--worker-class", "gevent", "--workers", "1",
         "--worker-connections", "20000", "--backlog", "4096", "--bind", f"127.0.0.1:{port}",
         "--no-control-socket", "--graceful-timeout", "1", "--timeout", "120", app_spec],
        cwd=cwd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gunicorn did not start; see {log_path}") from None
            time.sleep(0.1)


def worker_pid(arbiter):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(arbiter.pid)],
                         capture_output=True, text=True, check=False).stdout.split()
    return int(out[0])


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_ms(pid):
    """CPU time the process has used (user + system), in milliseconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def stop(process):
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class SseClient:
    """A raw-socket SSE client on asyncio; finds byte markers in the stream."""

    def __init__(self, uid):
        self.uid, self.reader, self.writer, self.tail = uid, None, None, b""

    async def connect(self, port, path, cookie, ready=None, timeout=60):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        sock = self.writer.get_extra_info("socket")
        # Close with a reset: 10k TIME_WAIT sockets per run would use up the loopback ports.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n"
                          "Accept: text/event-stream\r\n\r\n".encode())
        await self.writer.drain()
        if ready is not None:
            await asyncio.wait_for(self.wait_for(ready), timeout)

    async def wait_for(self, marker):
        """Read until `marker` arrives; return the perf_counter time it did."""
        while marker not in self.tail:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("stream closed")
            self.tail = self.tail[-256:] + data
        self.tail = self.tail[self.tail.index(marker) + len(marker):]
        return time.perf_counter()

    def close(self):
        if self.writer is not None:
            self.writer.close()


async def connect_all(clients, port, path_of, cookie_of, ready=None):
    """Connect every client, at most CONNECT_CONCURRENCY handshakes at a time; returns how
    many had to connect again.

    On a loaded machine a stream's set-up can wait longer than REDIS_POOL_WAIT_S for the
    hub's one set-up connection and is answered 503, or its opening takes longer than the
    client waits: it connects again after a pause, as a browser's reconnect would (up to
    CONNECT_ATTEMPTS times).
    """
    gate, retried = asyncio.Semaphore(CONNECT_CONCURRENCY), 0

    async def one(client):
        nonlocal retried
        for attempt in range(CONNECT_ATTEMPTS):
            async with gate:
                try:
                    return await client.connect(port, path_of(client), cookie_of(client), ready)
                except (ConnectionError, TimeoutError):
                    client.close()
                    client.tail = b""
                    if attempt == CONNECT_ATTEMPTS - 1:
                        raise
                    retried += 1
            await asyncio.sleep(RECONNECT_PAUSE_S)

    await asyncio.gather(*(one(c) for c in clients))
    return retried


class ForkedReader:
    """Reads the connected clients' sockets in a child process until each one's marker.

    The clients' own cost must not count: in this process, one asyncio loop reading 10k
    sockets (while a thread publishes) adds hundreds of milliseconds to the last reads. The
    child inherits the sockets, waits on them with one epoll and only looks for the marker;
    perf_counter is the system-wide monotonic clock, so its times compare with ours.

    The parent's heap (10k clients) is frozen out of the garbage collector across the fork:
    otherwise its first collection afterwards walks every object, each page it touches is
    copied, and the publisher stalls for 100-150 ms before its first chunk is out. That
    stall is the bench's own (a listener forks nothing) and was most of the measured p99.
    """

    def __init__(self, clients, marker, timeout=120):
        for c in clients:  # the parent's loop stops reading them: they are the child's now
            c.writer.transport.pause_reading()
        socks = [(c.uid, c.writer.get_extra_info("socket").fileno(), c.tail) for c in clients]
        ready_r, ready_w = os.pipe()
        self.out, out_w = os.pipe()
        gc.collect()
        gc.freeze()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child
            os.close(ready_r)
            os.close(self.out)
            try:
                times = _read_markers(socks, marker, timeout, lambda: os.write(ready_w, b"r"))
                with os.fdopen(out_w, "wb") as out:
                    out.write(json.dumps(times).encode())
            finally:
                os._exit(0)
        os.close(ready_w)
        os.close(out_w)
        os.read(ready_r, 1)  # its epoll holds every socket: publishing may start
        os.close(ready_r)

    def result(self):
        """{uid: perf_counter time the marker was read} (blocks until the child is done)."""
        with os.fdopen(self.out, "rb") as out:
            data = out.read()
        os.waitpid(self.pid, 0)
        gc.unfreeze()
        return {int(uid): t for uid, t in json.loads(data or b"{}").items()}


def _read_markers(socks, marker, timeout, ready):
    poller, pending, times = select.epoll(), {}, {}
    for uid, fd, tail in socks:
        if marker in tail:
            times[uid] = time.perf_counter()
            continue
        poller.register(fd, select.EPOLLIN)
        pending[fd] = [uid, tail]
    ready()
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for fd, _ in poller.poll(1.0):
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            now, entry = time.perf_counter(), pending[fd]
            entry[1] = entry[1][-256:] + data
            if marker in entry[1] or not data:
                if data:
                    times[entry[0]] = now
                poller.unregister(fd)
                del pending[fd]
    return times


def percentile(ordered, p):
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]
