"""`make run`: every process of Tickerbell in one terminal; Ctrl-C stops them all."""

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from honcho.manager import Manager
from honcho.printer import Message, Printer

from webapp.config import INSTANCE
from worker import redisd

ROOT = Path(__file__).resolve().parent.parent


def processes(port, demo):
    bin_dir = Path(sys.executable).parent
    flask = f"{bin_dir / 'flask'} --app wsgi"
    procs = {
        "web": f"{bin_dir / 'gunicorn'} --config {ROOT / 'gunicorn.conf.py'} "
               f"--bind 127.0.0.1:{port} wsgi:app",
        "worker": f"{flask} worker",
        "listener": f"{flask} listener",
        "scheduler": f"{flask} scheduler",
    }
    if demo:
        procs["feed"] = f"{sys.executable} -m worker.fakefeed --demo --port {demo}"
    return procs


def announce_when_up(port, printer):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    else:
        return
    banner = f"Tickerbell is running: open http://127.0.0.1:{port}/"
    printer.write(Message("line", banner, datetime.now(), "launch", None))


def seed_demo(env):
    """The demo user and a few alerts near the demo prices (`flask demo seed`, idempotent)."""
    flask = Path(sys.executable).parent / "flask"
    subprocess.run([str(flask), "--app", "wsgi", "demo", "seed"], env=env, cwd=str(ROOT),
                   check=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--demo", action="store_true", help="use the built-in fake market feed")
    args = parser.parse_args(argv)
    port = int(os.environ.get("PORT", "8000"))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    redis_process = None
    if not env.get("REDIS_URL"):
        try:
            redis_process, env["REDIS_URL"] = redisd.start(INSTANCE / "redis")
        except RuntimeError as exc:
            sys.exit(str(exc))
        print(f"private redis-server at {env['REDIS_URL']} (data in instance/redis)")
    demo_port = None
    if args.demo:
        demo_port = redisd.free_port()
        env["BINANCE_WS_URL"] = f"ws://127.0.0.1:{demo_port}"
        seed_demo(env)
    printer = Printer(sys.stdout)
    manager = Manager(printer=printer)
    for name, cmd in processes(port, demo_port).items():
        manager.add_process(name, cmd, env=env, cwd=str(ROOT))
    threading.Thread(target=announce_when_up, args=(port, printer), daemon=True).start()
    try:
        manager.loop()
    finally:
        if redis_process is not None:
            redisd.stop(redis_process)
    sys.exit(manager.returncode)


if __name__ == "__main__":
    main()
