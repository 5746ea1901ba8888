"""Hosting the listener: the lease, the RQ job and its watchdog, `flask listener`, the demo seed."""

import gc
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from rq.job import Job, JobStatus
from sqlalchemy import text

from devtools.demo import DEMO_ALERTS, DEMO_EMAIL
from tests.test_listener import eventually
from webapp import keys
from webapp.accounts import service as accounts
from webapp.alerts import service as alerts
from webapp.core.queues import STREAM_QUEUE, get_queue, rq_connection
from webapp.extensions import db, get_redis
from webapp.keys import LISTENER_LEASE as LEASE_KEY
from webapp.models import Alert
from worker.listener.hosting import JOB_ID, listener_watchdog, run_listener

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def hosted(make_app, feed):
    return make_app(BINANCE_WS_URL=feed.url, LISTENER_LEASE_TTL_S=0.6,
                    LISTENER_BACKOFF_BASE_S=0.01, LISTENER_BACKOFF_MAX_S=0.1)


def host(app):
    """Run the job function in a thread, as the RQ worker would in its main thread."""

    def target():
        with app.app_context():
            run_listener()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def lines(caplog, event):
    return [r.getMessage() for r in caplog.records if f"event={event}" in r.getMessage()]


def test_a_second_listener_waits_for_the_lease(hosted, feed, caplog):
    caplog.set_level(logging.INFO)
    hosted.config["LISTENER_LEASE_TTL_S"] = 3  # 0.6 s: one stall handed the lease over
    r = hosted.extensions["redis"]
    first = host(hosted)
    assert feed.wait_for_connections(1)
    second = host(hosted)
    assert eventually(lambda: lines(caplog, "lease_wait"))
    assert feed.connections_total == 1
    r.set(LEASE_KEY, "intruder")  # the first loses its lease and stops
    first.join(5)
    assert not first.is_alive() and lines(caplog, "lease_lost")
    r.delete(LEASE_KEY)  # the waiting one takes over
    assert feed.wait_for_connections(2)
    r.set(LEASE_KEY, "intruder")
    second.join(5)
    assert not second.is_alive()


def test_watchdog_enqueues_once_and_leaves_a_running_listener_alone(hosted):
    with hosted.app_context():
        queue = get_queue(STREAM_QUEUE)
        assert listener_watchdog() == "enqueued"
        assert listener_watchdog() == "queued"
        assert queue.job_ids == [JOB_ID]
        get_redis().set(LEASE_KEY, "someone", px=5000)
        assert listener_watchdog() == "running"
        get_redis().delete(LEASE_KEY)
        job = Job.fetch(JOB_ID, connection=rq_connection())
        queue.remove(job)
        job.set_status(JobStatus.FAILED)
        assert listener_watchdog() == "enqueued"
        assert queue.job_ids == [JOB_ID]


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_lease_held_by_a_dead_process_of_this_host_is_freed_at_once(hosted):
    """A listener killed with SIGKILL is replaced without waiting for its lease to lapse."""
    import socket

    with hosted.app_context():
        r = get_redis()
        job = get_queue(STREAM_QUEUE).enqueue("worker.listener.hosting.run_listener", job_id=JOB_ID)
        job.set_status(JobStatus.STARTED)  # its worker died with it
        r.set(LEASE_KEY, f"{socket.gethostname()}:{_dead_pid()}:abc", px=60_000)
        assert listener_watchdog() == "enqueued"
        assert not r.exists(LEASE_KEY)
        r.set(LEASE_KEY, f"{socket.gethostname()}:{os.getpid()}:abc", px=60_000)
        assert listener_watchdog() == "running"  # alive: left alone
        r.set(LEASE_KEY, f"elsewhere:{_dead_pid()}:abc", px=60_000)
        assert listener_watchdog() == "running"  # another host: its pids mean nothing here


def test_the_watchdog_meeting_the_data_plane_away_says_so_and_looks_again(make_app,
                                                                          refused_port):
    """A cluster mid-failover (here: no node answers) is the next run's to look at, 5 s on:
    an outcome, not an ERROR and a traceback each run (RQ's queues, on REDIS_URL, answer)."""
    app = make_app(REDIS_CLUSTER_NODES=[("127.0.0.1", refused_port)])
    with app.app_context():
        assert listener_watchdog() == "redis_down"
        assert listener_watchdog() == "redis_down"  # its guard let go: not "watched"


def test_the_watchdog_is_scheduled(app):
    from rq_scheduler import Scheduler

    from worker.schedule import reconcile

    with app.app_context():
        scheduler = Scheduler(queue_name="default", connection=rq_connection())
        reconcile(scheduler)
        scheduler.enqueue_jobs()  # every periodic job is due at once on a first start
        due = {job.func for job in get_queue("high").get_jobs()}  # a stale path raises
    assert listener_watchdog in due


def spawn(app, feed, tmp_path, name, *args):
    env = dict(os.environ, REDIS_URL=app.config["REDIS_URL"], BINANCE_WS_URL=feed.url,
               DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"],
               INSTANCE_PATH=app.config["INSTANCE_PATH"], LISTENER_LEASE_TTL_S="1",
               LISTENER_BACKOFF_BASE_S="0.05", PYTHONUNBUFFERED="1")
    log = open(tmp_path / f"{name}.log", "w")  # closed by the test when done
    proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "listener", *args],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def notifications(r, uid):
    return [json.loads(f["data"]) for _, f in r.xrange(keys.replay(uid))]


def test_killed_listener_is_restarted_without_loss_or_duplicate(hosted, feed, tmp_path):
    r = hosted.extensions["redis"]
    with hosted.app_context():
        uid = accounts.create_user("kill@example.com", "long password").id
        first = alerts.create_alert(uid, {"symbol": "BTCUSDT", "type": "above", "price": 100}).id
        second = alerts.create_alert(uid, {"symbol": "BTCUSDT", "type": "above", "price": 200}).id
        listener_watchdog()
    procs = [spawn(hosted, feed, tmp_path, "first")]
    try:
        assert feed.wait_for_subscription("btcusdt@aggTrade", timeout=30)
        feed.trade("BTCUSDT", 150)
        assert eventually(lambda: len(notifications(r, uid)) == 1)
        procs[0].kill()  # a crash between ticks: the lease lapses, the job looks started
        procs[0].wait(10)
        with hosted.app_context():
            assert eventually(lambda: listener_watchdog() == "enqueued", timeout=10)
        procs.append(spawn(hosted, feed, tmp_path, "second"))
        assert feed.wait(lambda f: f.connections_total == 2 and f.subscriptions(), timeout=30)
        feed.trade("BTCUSDT", 150)  # already fired: must not fire again
        feed.trade("BTCUSDT", 250)  # fires the second alert, once
        assert eventually(lambda: len(notifications(r, uid)) >= 2)
        fired = [n["alert_id"] for n in notifications(r, uid)]
        assert fired == [str(first), str(second)]
        procs[1].send_signal(signal.SIGTERM)  # a warm shutdown lets go of the lease
        assert procs[1].wait(15) == 0
        assert not r.exists(LEASE_KEY)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            proc.log.close()
    with hosted.app_context():
        assert not db.session.get(Alert, first).active  # settled by the slow path


def test_direct_listener_runs_without_rq_and_stops_on_sigterm(hosted, feed, tmp_path):
    r = hosted.extensions["redis"]
    proc = spawn(hosted, feed, tmp_path, "direct", "--direct")
    try:
        assert feed.wait_for_connections(1, timeout=30)
        assert get_queue_length(hosted) == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.log.close()
    assert not r.exists(LEASE_KEY) and r.hget("tb:listener", "state") == "stopped"


def get_queue_length(app):
    with app.app_context():
        return len(get_queue(STREAM_QUEUE))


def test_demo_seed_creates_the_demo_user_and_alerts_once(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["demo", "seed"])
    assert result.exit_code == 0, result.output
    assert DEMO_EMAIL in result.output
    with app.app_context():
        alert_list = db.session.scalars(db.select(Alert)).all()
        assert len(alert_list) == len(DEMO_ALERTS)
        assert {a.symbol for a in alert_list} == {s for s, *_ in DEMO_ALERTS}
        assert set(get_redis().hkeys("tb:symbols")) == {a.symbol for a in alert_list}
    again = runner.invoke(args=["demo", "seed"])
    assert "already has" in again.output


@pytest.mark.both_databases
def test_a_listening_listener_holds_no_transaction_open(hosted, feed, db_backend):
    """Its start reads every live alert. Left open, that read held a lock on `alerts` for as
    long as it listened (PostgreSQL), so a migration or a LOCK TABLE waited, and every alert
    query queued behind it; on SQLite it kept the write-ahead log from being checkpointed."""
    with hosted.app_context():
        user = accounts.create_user("idle@example.com", "correct horse battery")
        alerts.create_alert(user.id, {"symbol": "BTCUSDT", "condition": "above",
                                      "target": 1e9})
        db.session.commit()
    thread = host(hosted)
    assert feed.wait_for_connections(1)  # rebuilt, listening
    with hosted.app_context():
        with db.engine.connect() as other:
            if db_backend == "postgresql":
                other.execute(text("SET lock_timeout = '2s'"))
                other.execute(text("LOCK TABLE alerts IN ACCESS EXCLUSIVE MODE"))
            else:
                busy, _, _ = other.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
                assert busy == 0, "a reader held the write-ahead log"
            other.rollback()
        get_redis().set(LEASE_KEY, "intruder")  # it stops
    thread.join(5)
    assert not thread.is_alive()



def test_a_listener_job_that_ends_closes_its_own_connections(hosted, feed):
    """The RQ worker runs job after job in one process: each run's own client was left with
    its sockets open, a pool more each time its lease was lost."""
    r = hosted.extensions["redis"]

    def its_own():
        return [c for c in r.client_list() if c["name"] == "tickerbell-listener-0"]

    gc.disable()  # closed, not left to a collection that may come late or never
    try:
        for _ in range(2):
            thread = host(hosted)
            assert feed.wait_for_connections(1)
            assert eventually(its_own)  # named, so an operator's CLIENT LIST tells it apart
            r.set(LEASE_KEY, "intruder")  # it stops
            thread.join(5)
            assert not thread.is_alive()
            r.delete(LEASE_KEY)
            assert eventually(lambda: not its_own())
    finally:
        gc.enable()
