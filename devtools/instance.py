"""What `make run` keeps under instance/: the notes a command from a second shell reads to find
the running install (webapp/config.py), the private Redis's data folder for the database in use,
the metrics folder, the demo feed's port.
"""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from devtools import redisd
from webapp.config import (
    CLUSTER_NODES_FILE,
    DATABASE_ADDRESS_FILE,
    DEFAULT_DATABASE_URL,
    INSTANCE,
    METRICS_DIR_FILE,
    REDIS_ADDRESS_FILE,
    process_mark,
)

ROOT = Path(__file__).resolve().parent.parent


def fresh_metrics_dir(env):
    """PROMETHEUS_MULTIPROC_DIR (instance/metrics unless set), rid of its value files: every
    process of this start writes its values there; a previous start's must not be summed."""
    path = Path(env.get("PROMETHEUS_MULTIPROC_DIR") or INSTANCE / "metrics")
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # prometheus_client's files only: the folder may be shared
        stale.unlink(missing_ok=True)
    return str(path)


def note_running(env):
    """Name this start's metrics folder, database and Redis Cluster (if it has one) for
    commands from a second shell, with the launcher's pid and start time (config.py follows
    them while it runs). The database's note is readable by this user alone: its URL may
    hold a password."""
    mark = process_mark()
    METRICS_DIR_FILE.write_text(f"{env['PROMETHEUS_MULTIPROC_DIR']}\n{mark}\n")
    if env.get("REDIS_CLUSTER_NODES"):
        CLUSTER_NODES_FILE.write_text(f"{env['REDIS_CLUSTER_NODES']}\n{mark}\n")
    else:
        CLUSTER_NODES_FILE.unlink(missing_ok=True)
    fd = os.open(DATABASE_ADDRESS_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as note:
        note.write(f"{env.get('DATABASE_URL') or DEFAULT_DATABASE_URL}\n{mark}\n")


def note_redis(url):
    REDIS_ADDRESS_FILE.write_text(url + "\n")


def forget_running():
    for note in (REDIS_ADDRESS_FILE, METRICS_DIR_FILE, DATABASE_ADDRESS_FILE, CLUSTER_NODES_FILE):
        note.unlink(missing_ok=True)


def redis_dir(database):
    """The private Redis's data folder for the database of id `database` (None: unknown).
    Its inboxes and read state are keyed by user id: a new database's user 1 was shown the
    last one's. instance/redis keeps the database it first served (its id in `database.id`);
    another has instance/redis-<id>."""
    first = INSTANCE / "redis"
    if database is None:
        return first
    for folder in (first, INSTANCE / f"redis-{database}"):
        mark = folder / "database.id"
        if not mark.exists():
            folder.mkdir(parents=True, exist_ok=True)
            mark.write_text(database + "\n")
        if mark.read_text().strip() == database:
            return folder
    raise RuntimeError(f"{INSTANCE / f'redis-{database}'} belongs to another database")


def database_id(env):
    """The database's own id (`flask installation-id`, made on first use); None when it
    cannot be read (a database not migrated)."""
    flask = Path(sys.executable).parent / "flask"
    found = subprocess.run([str(flask), "--app", "wsgi", "installation-id"], cwd=str(ROOT),
                           env=dict(env, PROMETHEUS_MULTIPROC_DIR=""), capture_output=True,
                           text=True)
    lines = found.stdout.split()
    if found.returncode or not lines or not re.fullmatch(r"[0-9a-f]{12}", lines[-1]):
        return None
    return lines[-1]


def demo_feed_port():
    """The fake feed's port: the last start's while it is free, so the feed's address stays
    the same across restarts, and with it the symbol list fetched from there (a list from
    another address counts as none: every symbol unverified until the next fetch)."""
    saved = INSTANCE / "demo.port"
    try:
        port = int(saved.read_text())
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))
    except (OSError, ValueError):
        port = redisd.free_port()
    INSTANCE.mkdir(parents=True, exist_ok=True)
    saved.write_text(f"{port}\n")
    return port
