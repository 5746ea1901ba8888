"""/metrics across processes: gunicorn's workers, and every process `make run` starts, write
to one PROMETHEUS_MULTIPROC_DIR and each scrape sums them, during a storm too."""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import websocket
from prometheus_client.mmap_dict import MmapedDict

from devtools import instance, launch
from devtools.fakefeed import FakeFeed
from devtools.redisd import free_port
from tests.hub import make_user, poll
from tests.live_server import cookie_header, login
from tests.product import Product, until
from tests.sse_helpers import open_stream
from tests.test_metrics import order, parse, value
from webapp import create_app
from webapp.accounts import service as accounts
from webapp.extensions import db
from webapp.models import User
from webapp.notify import service_tokens

ROOT = Path(__file__).resolve().parent.parent


# -- several gunicorn workers, as `make run` serves ------------------------------------
class Served:
    """gunicorn with gunicorn.conf.py (2 workers) writing to one PROMETHEUS_MULTIPROC_DIR."""

    def __init__(self, tmp, redis_url):
        self.prom, self.port = tmp / "prom", free_port()
        self.prom.mkdir()
        db_url = f"sqlite:///{tmp / 'site.db'}"
        settings = {"REDIS_URL": redis_url, "SECRET_KEY": "metrics-secret",
                    "INSTANCE_PATH": str(tmp)}
        self.app = create_app({"SQLALCHEMY_DATABASE_URI": db_url, **settings})
        with self.app.app_context():
            db.create_all()
            self.token = service_tokens.create("storm")[1]
        self.env = {**{k: v for k, v in os.environ.items() if k != "WEB_CONCURRENCY"},
                    **settings, "DATABASE_URL": db_url, "PROMETHEUS_MULTIPROC_DIR": str(self.prom)}
        self.log = open(tmp / "gunicorn.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "--config",
             str(ROOT / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{self.port}", "wsgi:app"],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"

    def workers(self):
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.process.pid)],
                             capture_output=True, text=True, check=False).stdout.split()
        return {int(pid) for pid in out}

    def scrape(self):
        response = requests.get(self.base + "/metrics", timeout=10)
        assert response.status_code == 200
        return parse(response.text)

    def post(self, uid, n=1):
        """`n` events in one request on a fresh connection (so any worker may take it)."""
        response = requests.post(self.base + "/api/v1/events", json=[order(uid)] * n,
                                 headers={"Authorization": f"Bearer {self.token}",
                                          "Connection": "close"}, timeout=30)
        assert response.status_code == 202, response.text[:300]
        return n

    def pids_with(self, prefix):
        """Processes that wrote values of this kind (`counter`, `gauge_livesum`, ...)."""
        return {int(f.stem.rpartition("_")[2]) for f in self.prom.glob(f"{prefix}_*.db")}

    def stream_holder(self):
        """The worker whose open-stream gauge counts a stream (each counts from 0)."""
        [holder] = {pid for pid in self.pids_with("gauge_livesum") & self.workers()
                    if any(v for _, v, _, _ in MmapedDict.read_all_values_from_file(
                        str(self.prom / f"gauge_livesum_{pid}.db")))}
        return holder

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(15)
        self.log.close()
        with self.app.app_context():
            db.engine.dispose()


@pytest.fixture
def served(tmp_path, redis_url):
    site = Served(tmp_path, redis_url)
    try:
        assert poll(lambda: len(site.workers()) == 2, timeout=30)
        assert poll(lambda: _answers(site), timeout=30), (tmp_path / "gunicorn.log").read_text()
        yield site
    finally:
        site.stop()


def _answers(site):
    try:
        return requests.get(site.base + "/api/v1/openapi.json", timeout=5).ok
    except requests.RequestException:
        return False


def test_a_scrape_during_a_storm_parses_and_sums_every_worker(served):
    uid = make_user(served.app, "storm@example.com")
    posted, scrapes, stop = [], [], threading.Event()

    def storm():
        while not stop.is_set():
            posted.append(served.post(uid, n=20))

    threads = [threading.Thread(target=storm, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    try:  # scraping until both workers have served events, and at least five times
        while len(served.pids_with("counter")) < 2 or len(scrapes) < 5:
            assert time.monotonic() < deadline, "the workers did not both serve the storm"
            scrapes.append(served.scrape())
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    accepted = [value(s, "tickerbell_events_total", outcome="accepted") for s in scrapes]
    assert accepted == sorted(accepted) and accepted[-1] > 0  # every scrape parsed, none went back
    final = served.scrape()
    assert value(final, "tickerbell_events_total", outcome="accepted") == sum(posted)
    assert value(final, "tickerbell_notifications_total", type="ORDER_EXECUTED",
                 source="events") == sum(posted)
    assert served.pids_with("counter") <= served.workers()  # summed over both workers


def test_a_killed_workers_streams_leave_the_sum(served):
    make_user(served.app, "roam@example.com")
    cookie = cookie_header(login(served.base, "roam@example.com", "correct horse"))
    sock, reader = open_stream(served.port, cookie)
    try:
        reader.until(lambda events: any(e.get("event") == "unread" for e in events))
        assert value(served.scrape(), "tickerbell_live_streams", transport="sse") == 1
        holder = served.stream_holder()
        os.kill(holder, signal.SIGKILL)  # its stream ends with it; gunicorn's child_exit runs
        assert poll(lambda: len(served.workers() - {holder}) == 2, timeout=30)
        assert poll(lambda: value(served.scrape(), "tickerbell_live_streams",
                                  transport="sse") == 0, timeout=30)
    finally:
        sock.close()


def test_streams_of_workers_gone_without_their_exit_hook_leave_the_sum(served):
    """A web master killed with its workers runs no exit hook: their files stay (the drill
    counted 10 streams that no longer existed until the next full restart)."""
    make_user(served.app, "gone@example.com")
    cookie = cookie_header(login(served.base, "gone@example.com", "correct horse"))
    sock, reader = open_stream(served.port, cookie)
    try:
        reader.until(lambda events: any(e.get("event") == "unread" for e in events))
        holder = served.stream_holder()
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout.strip()
        left = served.prom / f"gauge_livesum_{gone}.db"  # what such a worker leaves behind
        left.write_bytes((served.prom / f"gauge_livesum_{holder}.db").read_bytes())
        assert value(served.scrape(), "tickerbell_live_streams", transport="sse") == 1
        assert not left.exists()
    finally:
        sock.close()


def test_websocket_streams_count_as_ws(served):
    uid = make_user(served.app, "socket@example.com")
    with served.app.app_context():
        key = accounts.create_api_key(db.session.get(User, uid), "metrics")[1]
    ws = websocket.create_connection(f"ws://127.0.0.1:{served.port}/ws",
                                     header=[f"X-API-Key: {key}"], timeout=10)
    try:
        assert json.loads(ws.recv())["event"] == "unread"  # attached: its opening came
        assert value(served.scrape(), "tickerbell_live_streams", transport="ws") == 1
        assert value(served.scrape(), "tickerbell_live_streams", transport="sse") == 0
    finally:
        ws.close()
    assert poll(lambda: value(served.scrape(), "tickerbell_live_streams", transport="ws") == 0)


def test_the_launcher_gives_each_start_a_metrics_folder_without_old_values(tmp_path):
    shared = tmp_path / "prom"
    shared.mkdir()
    (shared / "counter_123.db").write_bytes(b"old")
    (shared / "notes.txt").write_text("not ours")
    assert instance.fresh_metrics_dir({"PROMETHEUS_MULTIPROC_DIR": str(shared)}) == str(shared)
    assert sorted(p.name for p in shared.iterdir()) == ["notes.txt"]


def test_the_launchers_key_migration_leaves_no_metrics_file(tmp_path, redis_url):
    """It runs before the processes and counts nothing: its file of zeros was read by every
    scrape for as long as `make run` ran."""
    folder = tmp_path / "prom"
    folder.mkdir()
    env = dict(os.environ, REDIS_URL=redis_url, PROMETHEUS_MULTIPROC_DIR=str(folder),
               DATABASE_URL=f"sqlite:///{tmp_path / 'tb.db'}")
    out = io.StringIO()
    launch.migrate_keys(launch.Printer(out), env)
    assert "Traceback" not in out.getvalue(), out.getvalue()
    assert sorted(p.name for p in folder.iterdir()) == []


def test_a_command_joins_a_running_launchers_folder_only(tmp_path, monkeypatch):
    """By instance/metrics.dir (the folder, the launcher's pid and start time): not a dead
    launcher's, nor one whose pid another process has taken since, not when the variable is
    set; set empty it is dropped (prometheus_client would count into the current folder)."""
    from webapp import config

    folder, note = tmp_path / "metrics", tmp_path / "metrics.dir"
    folder.mkdir()
    monkeypatch.setattr(config, "METRICS_DIR_FILE", note)
    # a copy it may change: what it sets must not reach the processes later tests start
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items()
                                        if k != "PROMETHEUS_MULTIPROC_DIR"})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    note.write_text(f"{folder}\n{dead}\n")  # a launcher killed with -9 left it
    config.join_running_metrics()
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    mark = config.process_mark()
    pid, started = mark.split()
    note.write_text(f"{folder}\n{pid} {int(started) - 1}\n")  # its pid, now another process's
    config.join_running_metrics()
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    note.write_text(f"{folder}\n{mark}\n")
    config.join_running_metrics()
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(folder)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = ""
    config.join_running_metrics()
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


@pytest.fixture
def product(tmp_path):
    with FakeFeed() as feed:
        product = Product(tmp_path, feed)
        product.start()
        yield product
        assert product.stop() == 0, product.output()


def test_make_run_sums_the_listener_worker_and_web_processes(product):
    """`make run`'s processes write to one folder: the listener's ticks reach the web's scrape."""
    folder = product.tmp / "metrics"
    assert product.fresh_alert_fires()

    def fired_and_counted():
        samples = parse(requests.get(product.base + "/metrics", timeout=10).text)
        matched = sum(v for (name, _), v in samples.items()
                      if name == "tickerbell_ticks_matched_total")
        fired = value(samples, "tickerbell_alerts_fired_total", type="PRICE_ALERT")
        return samples if matched >= 1 and fired == 1 else None

    assert until(fired_and_counted, 30), product.output()
    # the listener's status, read from Redis at scrape time (it may be mid-reconnect a moment)
    assert until(lambda: value(parse(requests.get(product.base + "/metrics", timeout=10).text),
                               "tickerbell_listener_connections", shard="0") == 1, 30)
    pids = {p.stem.rpartition("_")[2] for p in folder.glob("*.db")}
    assert len(pids) >= 3, sorted(p.name for p in folder.iterdir())  # web workers, listener


def test_a_notification_sent_from_a_second_shell_is_counted_too(product):
    """As an operator types it beside `make run`, with nothing but the instance folder to find
    the running install by: its Redis and its metrics folder."""
    flask = Path(sys.executable).parent / "flask"
    env = {k: v for k, v in product.env.items()
           if k not in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")}

    def run(*args):
        done = subprocess.run([str(flask), "--app", "wsgi", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr

    run("users", "create", "ops@example.com", "--password", "a long password here")
    run("notify", "ops@example.com", "SYSTEM_MAINTENANCE", "Maintenance", "At 02:00")
    samples = parse(requests.get(product.base + "/metrics", timeout=10).text)
    assert value(samples, "tickerbell_notifications_total", type="SYSTEM_MAINTENANCE",
                 source="cli") == 1
