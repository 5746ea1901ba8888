"""`make run`: every process of Tickerbell in one terminal, each restarted when it exits.

A small supervisor of our own rather than supervisord or honcho: honcho stops everything
when one process exits; supervisord gives a process up for good (FATAL) after a few quick
failures, cannot stop the private Redis after the processes that use it unless it also owns
it through a generated config file, and prints no per-process prefix. What we need is
small: start each process in its own process group, prefix its lines, restart it with
backoff when it exits, tell it how often it was restarted (`TICKERBELL_RESTARTS`, shown in
/api/v1/health), and on Ctrl-C stop them in order, Redis last, and exit 0.
"""

import argparse
import logging
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import redis
from honcho.printer import Message, Printer

from devtools import instance, redisd
from webapp.core import logs

ROOT = Path(__file__).resolve().parent.parent
RESTART_BASE_S, RESTART_CAP_S = 0.5, 30.0
# A process that lived this long had started: when it dies, it restarts at once (a Redis
# killed while serving is back in a tenth of a second). Exits sooner are failed starts,
# and those back off, so a process that cannot start never spins.
STABLE_S = 3.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.1


def listeners(flask, shards):
    """One `flask listener` per shard (LISTENER_SHARDS): each RQ worker on the `stream` queue
    hosts one shard's job, whichever it takes, so a process that dies stops that shard alone."""
    if shards <= 1:
        return {"listener": [*flask, "listener"]}
    return {f"listener-{n}": [*flask, "listener"] for n in range(1, shards + 1)}


def commands(port, demo_port, shards=1, listen_fd=None):
    """The processes, in start order (they stop in the reverse order). `listen_fd`: a bound
    socket the web server takes instead of binding `port` itself."""
    bin_dir = Path(sys.executable).parent
    flask = [str(bin_dir / "flask"), "--app", "wsgi"]
    procs = {}
    if demo_port:
        procs["feed"] = [sys.executable, "-m", "devtools.fakefeed", "--demo",
                         "--port", str(demo_port)]
    procs.update({
        "scheduler": [*flask, "scheduler"],
        **listeners(flask, shards),
        "worker": [*flask, "worker"],
        "web": [str(bin_dir / "gunicorn"), "--config", str(ROOT / "gunicorn.conf.py"),
                "--bind", f"fd://{listen_fd}" if listen_fd else f"127.0.0.1:{port}", "wsgi:app"],
    })
    return procs


class Child:
    """One supervised process: its command, its current run, and its restart bookkeeping."""

    def __init__(self, name, argv, env, printer, pass_fds=()):
        self.name, self.argv, self.env, self.printer = name, argv, env, printer
        self.pass_fds = pass_fds
        self.process = None
        self.restarts = 0
        self.quick_exits = 0  # exits in a row that came before STABLE_S: the backoff grows
        self.started_at = 0.0
        self.restart_at = None

    def start(self):
        env = dict(self.env, TICKERBELL_PROCESS=self.name, TICKERBELL_RESTARTS=str(self.restarts))
        # A process group of its own: Ctrl-C reaches the launcher only, which stops the
        # children in order instead of all at once.
        self.process = subprocess.Popen(
            self.argv, env=env, cwd=str(ROOT), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            pass_fds=self.pass_fds)
        self.started_at = time.monotonic()
        self.restart_at = None
        threading.Thread(target=self._relay, args=(self.process.stdout, self.process.pid),
                         daemon=True).start()

    def _relay(self, stream, pid):
        """Each line the process writes, under its name. LOG_FORMAT=json: a traceback it
        printed raw (a forked RQ scheduler dying with Redis, multiprocessing's "Process ...:"
        first) is one ERROR record: the lines that are no JSON object, from its first until
        the process writes a JSON line, falls quiet for TRACEBACK_QUIET_S, or ends."""
        fd, pending, held = stream.fileno(), b"", []
        while True:
            if not select.select([fd], [], [], TRACEBACK_QUIET_S if held else None)[0]:
                self._say_traceback(held, pid)
                held = []
                continue
            chunk = os.read(fd, 65536)
            *lines, pending = (pending + chunk).split(b"\n") if chunk else [pending, b""]
            for line in (raw.decode(errors="replace") for raw in lines):
                if JSON_LINES and not line.startswith("{") and (held or logs.opens_traceback(line)):
                    held.append(line)
                    continue
                if held:
                    self._say_traceback(held, pid)
                    held = []
                if line or chunk:
                    self.say(line)
            if not chunk:
                break
        if held:
            self._say_traceback(held, pid)
        stream.close()

    def _say_traceback(self, lines, pid):
        record = logs.traceback_record(self.name, lines, pid)
        show(self.printer, logs.JsonFormatter(self.name).format(record), self.name)

    def say(self, line, name=None, level=logging.INFO):
        show(self.printer, line, name or self.name, level)

    def check(self, now):
        """Notice an exit and plan the restart; start it when its time has come."""
        if self.process is not None and self.process.poll() is not None:
            # what the dead process left in its group (an RQ scheduler it forked) goes too
            _signal_group(self.process, signal.SIGKILL)
            code, self.process = self.process.returncode, None
            ran = now - self.started_at
            self.quick_exits = 0 if ran >= STABLE_S else self.quick_exits + 1
            delay = backoff(self.quick_exits)
            self.restart_at = now + delay
            self.say(f"{self.name} exited ({describe(code)}) after {ran:.1f} s; "
                     f"restarting in {delay:.1f} s", "launch", logging.WARNING)
        if self.process is None and self.restart_at is not None and now >= self.restart_at:
            self.restarts += 1
            self.start()

    def stop(self):
        """SIGTERM, a grace period, then SIGKILL; the restart plan is dropped."""
        self.restart_at = None
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.say(f"{self.name} did not stop within {STOP_TIMEOUT_S:.0f} s: killed", "launch",
                     logging.WARNING)
            _signal_group(process, signal.SIGKILL)
            process.wait()


def backoff(quick_exits):
    """No wait for a process that ran a while; then 0.5, 1, 2 ... 30 s, with jitter."""
    if quick_exits == 0:
        return 0.1
    ceiling = min(RESTART_CAP_S, RESTART_BASE_S * 2 ** (quick_exits - 1))
    return random.uniform(ceiling / 2, ceiling)


def describe(code):
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"code {code}"


def _signal_group(process, sig):
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def shard_count(env):
    return max(1, int(env.get("LISTENER_SHARDS") or 1))


def private_redis(printer, env):
    """A supervised redis-server on a Unix socket, data under instance/; waits for PING.
    Returns (the child, its URL, its data folder)."""
    data_dir = private_redis_dir(printer, env)
    data_dir.mkdir(parents=True, exist_ok=True)
    child = Child("redis", redisd.command(data_dir), env, printer)
    child.start()
    url = redisd.url_for(data_dir)
    with redis.Redis.from_url(url, socket_connect_timeout=0.5) as client:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and child.process.poll() is None:
            try:
                client.ping()
                return child, url, data_dir
            except redis.RedisError:
                time.sleep(0.05)
    child.stop()
    raise RuntimeError(f"redis-server did not start: see {data_dir / 'redis.log'}")


def private_redis_dir(printer, env):
    """The private Redis's data folder for the database in use (devtools/instance.py)."""
    found = instance.database_id(env)
    if found is None:
        show(printer, "could not read the database's id (is it migrated? `flask db upgrade`):"
                      " the private Redis keeps its data in instance/redis", "launch",
             logging.WARNING)
    return instance.redis_dir(found)


def announce_when_up(port, printer, stopping):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not stopping.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    else:
        return
    banner = f"Tickerbell is running: open http://127.0.0.1:{port}/ (Ctrl-C stops it)"
    show(printer, banner, "launch")



JSON_LINES = (os.environ.get("LOG_FORMAT") or "").lower() == "json"  # checked in main()
TRACEBACK_QUIET_S = 0.5  # a traceback printed raw ends at the latest this long after its last
# honcho's Printer prints a line's text and its newline as two writes: two processes' relays
# could interleave them, gluing two JSON log lines into one
PRINTING = threading.Lock()


def show(printer, line, name, level=logging.INFO):
    """One line of a process's (or our own) output, whole, under its name; under
    LOG_FORMAT=json, a line that is not a JSON object yet (ours, a crash's traceback, a
    command's print) is made one at `level`, so a log shipper reads every line."""
    if JSON_LINES and not line.startswith("{"):
        line = logs.JsonFormatter(name).format(
            logging.LogRecord(name, level, "", 0, line, None, None))
    with PRINTING:
        printer.write(Message("line", line + "\n", datetime.now(), name, None))

def demo_env(env, port):
    """The fake feed on `port` stands in for Binance: its streams and its exchangeInfo."""
    return dict(env, BINANCE_WS_URL=f"ws://127.0.0.1:{port}",
                BINANCE_API_URL=f"http://127.0.0.1:{port}")


def migrate_keys(printer, env):
    """Redis keys of the layout before hash tags to their new names (`flask redis-migrate`:
    idempotent, a no-op on a cluster), before any process writes the new ones. It counts
    nothing, so it leaves no metrics file for every scrape to read."""
    run_flask(printer, dict(env, PROMETHEUS_MULTIPROC_DIR=""), "redis-migrate")


def seed_demo(printer, env):
    """The demo user and a few alerts near the demo prices (`flask demo seed`, idempotent)."""
    run_flask(printer, env, "demo", "seed")


def run_flask(printer, env, *args):
    """A `flask` command run to its end, its lines shown as the launcher's."""
    flask = Path(sys.executable).parent / "flask"
    with subprocess.Popen([str(flask), "--app", "wsgi", *args], env=env, cwd=str(ROOT),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as command:
        for raw in command.stdout:  # as they come: a command that hangs shows where
            show(printer, raw.decode(errors="replace").rstrip("\n"), "launch")


def take_the_terminal():
    """Make Ctrl-C reach the launcher alone, not `make` above it; returns an undo.

    In a terminal, Ctrl-C signals the whole foreground process group: `make` would die of
    it and report an error while we stop everything in order. As its own foreground group
    the launcher gets the signal, stops everything and exits 0, and so does `make`.
    """
    if not sys.stdin.isatty():
        return lambda: None
    fd, before = sys.stdin.fileno(), os.tcgetpgrp(sys.stdin.fileno())
    try:
        os.setpgid(0, 0)
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # a background group may not take it
        os.tcsetpgrp(fd, os.getpgrp())
    except OSError:
        return lambda: None

    def undo():
        try:
            os.tcsetpgrp(fd, before)
        except OSError:
            pass

    return undo


def supervise(children, stopping):
    """Keep every child running until Ctrl-C (or SIGTERM)."""
    while not stopping.is_set():
        now = time.monotonic()
        for child in children:
            child.check(now)
        stopping.wait(POLL_S)


def listen_socket():
    """(fd, port): LISTEN_FD names a bound socket this process inherited (a test holds its
    port that way, so no other process can take it first); else PORT, for gunicorn to bind."""
    fd = os.environ.get("LISTEN_FD")
    if not fd:
        return None, int(os.environ.get("PORT", "8000"))
    with socket.fromfd(int(fd), socket.AF_INET, socket.SOCK_STREAM) as held:  # a copy
        return int(fd), held.getsockname()[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="use the built-in fake market feed")
    args = parser.parse_args(argv)
    try:
        logs.format_name(os.environ)
    except ValueError as exc:  # every process would refuse it: said once, here
        sys.exit(str(exc))
    listen_fd, port = listen_socket()
    env = dict(os.environ, PYTHONUNBUFFERED="1", PORT=str(port))  # PUBLIC_URL's default
    env["PROMETHEUS_MULTIPROC_DIR"] = instance.fresh_metrics_dir(env)
    printer = Printer(sys.stdout)
    stopping = threading.Event()
    give_back = take_the_terminal()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    children = []
    if not env.get("REDIS_URL"):
        try:
            redis_child, env["REDIS_URL"], data_dir = private_redis(printer, env)
        except RuntimeError as exc:
            sys.exit(str(exc))
        children.append(redis_child)
        instance.note_redis(env["REDIS_URL"])
        show(printer, f"private redis-server at {env['REDIS_URL']} (data in {data_dir})",
             "launch")
    migrate_keys(printer, env)
    demo_port = None
    if args.demo:
        demo_port = instance.demo_feed_port()
        env = demo_env(env, demo_port)
        seed_demo(printer, env)
    started = len(children)
    # set, so each process announces it, and one started in its place after a change of
    # count is never refused for the old count the others announced (shards.py)
    env["LISTENER_SHARDS"] = str(shard_count(env))
    web_fds = (listen_fd,) if listen_fd else ()
    children += [Child(name, argv, env, printer, web_fds if name == "web" else ())
                 for name, argv in commands(port, demo_port, shard_count(env), listen_fd).items()]
    try:
        instance.note_running(env)  # for a command from a second shell (config.py)
        for child in children[started:]:
            child.start()
        threading.Thread(target=announce_when_up, args=(port, printer, stopping),
                         daemon=True).start()
        supervise(children, stopping)
    finally:
        show(printer, "stopping Tickerbell ...", "launch")
        # web first, Redis last: nothing is left talking to a Redis that has gone
        for child in reversed(children):
            child.stop()
        instance.forget_running()
        give_back()
    show(printer, "stopped", "launch")


if __name__ == "__main__":
    main()
