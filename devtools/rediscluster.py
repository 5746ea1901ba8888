"""A real Redis Cluster on loopback: redis-server processes, masters and replicas.

The tests start theirs with start(); a developer runs `python -m devtools.rediscluster
[--dir D]`, which prints the REDIS_CLUSTER_NODES line for `make run` and stops the cluster
on Ctrl-C.
"""

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

from devtools import redisd

HOST = "127.0.0.1"
SLOTS = 16384
MIN_MAJOR = 7  # CLUSTER ADDSLOTSRANGE and cluster-port arrived in Redis 7.0
NODE_TIMEOUT_MS = 1000  # a dead master is declared failed, and replaced, within a few seconds
BUS_OFFSET = 10000  # Redis's own default: a node's cluster bus port, above its port


class ClusterUnavailable(RuntimeError):
    """No redis-server here can run the cluster: none found, or one older than Redis 7."""


def find_binary():
    """The redis-server devtools.redisd would use, refused unless it is Redis 7 or newer."""
    binary = redisd.find_binary()
    if binary is None:
        raise ClusterUnavailable("Redis Cluster needs redis-server >= 7: none found "
                                 "(set REDIS_SERVER or put one on PATH)")
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    except OSError as error:
        raise ClusterUnavailable(f"Redis Cluster needs redis-server >= 7: {error}") from error
    match = re.search(r"v=(\d+)\.", out)
    if not match or int(match.group(1)) < MIN_MAJOR:
        raise ClusterUnavailable(f"Redis Cluster needs redis-server >= 7; {binary} is: {out!r}")
    return binary


def _command(port, *args):
    """One command on one node, over a connection closed right after."""
    with redis.Redis(HOST, port, decode_responses=True, socket_timeout=2) as client:
        return client.execute_command(*args)


def _spawn(binary, node_dir, port, bus_port, node_timeout_ms):
    node_dir.mkdir(parents=True, exist_ok=True)
    # An explicit bus port: the default port + 10000 overflows for ephemeral ports above 55535.
    # Full coverage stays required (Redis's default): while a master's slots have no owner
    # the whole cluster refuses, as production does, so the drills see the real outage.
    # No diskless-sync delay: by default a master waits 5 s for more replicas before a full sync.
    args = [
        binary, "--bind", HOST, "--port", str(port), "--cluster-port", str(bus_port),
        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", str(node_timeout_ms), "--cluster-require-full-coverage", "yes",
        "--repl-diskless-sync-delay", "0",
        "--dir", str(node_dir), "--appendonly", "no", "--save", "",
        "--logfile", str(node_dir / "redis.log"),
    ]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_until(check, timeout, what):
    """Return once check() is true; raise when `timeout` seconds pass first."""
    # Cluster state changes arrive over gossip with no event a client can subscribe to:
    # poll the condition itself, briefly, until a deadline.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"Redis Cluster: {what} not reached within {timeout} s")


class Cluster:
    """Running cluster nodes by port; `nodes` are their "host:port" addresses."""

    def __init__(self, processes):
        self.processes = processes
        self.nodes = [f"{HOST}:{port}" for port in processes]

    def roles(self):
        """Each live node's ROLE reply, by port."""
        live = [port for port, process in self.processes.items() if process.poll() is None]
        return {port: _command(port, "ROLE") for port in live}

    def masters(self):
        return [f"{HOST}:{port}" for port, role in self.roles().items() if role[0] == "master"]

    def replicas(self):
        return [f"{HOST}:{port}" for port, role in self.roles().items() if role[0] == "slave"]

    def kill(self, port):
        """SIGKILL one node, as a crash would: no goodbye to the others."""
        self.processes[port].kill()
        self.processes[port].wait()

    def stop(self, timeout=10.0):
        """Terminate every node, then wait for each (killing one that lingers)."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def healthy(self):
        """Every live node says cluster_state:ok, agrees on the roles, replicas are linked."""
        roles = self.roles()
        for port, role in roles.items():
            if _command(port, "CLUSTER INFO").get("cluster_state") != "ok":
                return False
            if role[0] == "slave" and role[3] != "connected":
                return False
            view = _command(port, "CLUSTER NODES")
            for other, other_role in roles.items():
                flags = view.get(f"{HOST}:{other}", {}).get("flags", "")
                if other_role[0] not in flags or "fail" in flags:
                    return False
        return True

    def wait_healthy(self, timeout=30.0):
        wait_until(self.healthy, timeout, "cluster_state:ok with every replica linked")


def _form(ports, bus_ports, masters):
    """MEET every node, give the masters even slot ranges, attach each replica to a master."""
    for port, bus_port in zip(ports[1:], bus_ports[1:], strict=True):
        _command(ports[0], "CLUSTER MEET", HOST, port, bus_port)
    for i, port in enumerate(ports[:masters]):
        low, high = i * SLOTS // masters, (i + 1) * SLOTS // masters - 1
        _command(port, "CLUSTER ADDSLOTSRANGE", low, high)
    ids = [_command(port, "CLUSTER MYID") for port in ports[:masters]]
    for i, port in enumerate(ports[masters:]):
        # REPLICATE fails until gossip has told this node about its master: retry it.
        master_id = ids[i % masters]
        wait_until(lambda p=port, m=master_id: _command(p, "CLUSTER REPLICATE", m),
                   10.0, f"replica {port} knowing master {master_id}")


def start(base_dir, masters=3, replicas_per_master=1, timeout=30.0,
          node_timeout_ms=NODE_TIMEOUT_MS, base_port=None):
    """Start and form a cluster under `base_dir`; return it once healthy on every node.
    `node_timeout_ms`: how long a node may not answer before it is taken for failed.
    `base_port`: the nodes on it and those after it (buses 10000 above), else free ports."""
    binary = find_binary()
    count = masters * (1 + replicas_per_master)
    if base_port:
        ports = list(range(base_port, base_port + count))
        bus_ports = [port + BUS_OFFSET for port in ports]
    else:
        free = set()
        while len(free) < 2 * count:
            free.add(redisd.free_port())
        ports, bus_ports = list(free)[:count], list(free)[count:]
    dirs = {port: Path(base_dir) / str(port) for port in ports}
    cluster = Cluster({port: _spawn(binary, dirs[port], port, bus, node_timeout_ms)
                       for port, bus in zip(ports, bus_ports, strict=True)})
    try:
        for port in ports:
            wait_until(lambda p=port: _command(p, "PING"), 10.0,
                       f"PING on {port} (its log: {dirs[port] / 'redis.log'})")
        _form(ports, bus_ports, masters)
        cluster.wait_healthy(timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def serve(base_dir, stop, base_port=None):
    """Run a 3+3 cluster under `base_dir` until `stop` is set (or every node has died)."""
    try:
        cluster = start(base_dir, base_port=base_port)
    except ClusterUnavailable as missing:
        sys.exit(str(missing))
    try:
        print(f"REDIS_CLUSTER_NODES={','.join(cluster.nodes)}", flush=True)
        print(f"Redis Cluster: 3 masters, 3 replicas, data under {base_dir} (no persistence); "
              "Ctrl-C stops it", file=sys.stderr, flush=True)
        while not stop.wait(1.0):
            if all(p.poll() is not None for p in cluster.processes.values()):
                sys.exit("Redis Cluster: every node has exited")
    finally:
        cluster.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Start a Redis Cluster on loopback for development (3 masters, 3 replicas).")
    parser.add_argument("--dir", help="where the nodes keep their files (default: a temporary "
                                      "directory, removed on exit)")
    parser.add_argument("--port", type=_base_port, help="the first node's port: the six "
                        "nodes take it and the five after it (default: free ports)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.dir:
        serve(Path(args.dir), stop, args.port)
        return
    with tempfile.TemporaryDirectory(prefix="tickerbell-cluster-") as base_dir:
        serve(Path(base_dir), stop, args.port)



def _base_port(text):
    port = int(text)
    if not 1024 <= port <= 65535 - BUS_OFFSET - 5:
        raise argparse.ArgumentTypeError(
            f"a port from 1024 to {65535 - BUS_OFFSET - 5}: its bus ports are {BUS_OFFSET} above")
    return port


if __name__ == "__main__":
    main()
