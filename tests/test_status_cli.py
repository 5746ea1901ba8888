"""`flask status`: the operations page's facts as text or JSON, exit status 1 naming what is
unhealthy; it also answers from a second shell while `make run` runs."""

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy.exc
from rq import Queue

from devtools.fakefeed import FakeFeed
from tests.hub import run_jobs
from tests.product import ROOT, Product
from tests.test_ops_page import beating, explode
from webapp import clock
from webapp.admin import jobs
from webapp.core.queues import enqueue, rq_connection
from webapp.delivery.dispatch import breaker as delivery_breaker
from worker.listener.hosting import listener_watchdog


def test_a_healthy_product_exits_0_with_the_facts(app, runner, monkeypatch):
    now = clock.now_ms()
    monkeypatch.setattr(clock, "now_ms", lambda: now)  # a slow run must not age the trade
    beating(app, trade_age_ms=2500, lag_ms=1700)
    result = runner.invoke(args=["status"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("Tickerbell ") and ": ok (checked " in lines[0]
    assert "Listener: 2 connections, 4 streams, last trade 2.5 s ago, lag 1.7 s" in lines
    assert "  shard 0: connected, 2 connections, heartbeat 0.0 s ago, last trade 2.5 s ago, " \
           "lag 1.7 s" in lines
    assert any(line.startswith("  delivery-email ") and "closed" in line for line in lines)
    assert "Failed jobs: 0" in lines


def test_a_trade_newer_than_the_check_is_no_lag_not_a_negative_one(app, runner, monkeypatch):
    """The reads waited on Redis (a master frozen) while the listener traded on."""
    now = clock.now_ms()
    monkeypatch.setattr(clock, "now_ms", lambda: now)
    beating(app, trade_age_ms=-4400)
    lines = runner.invoke(args=["status"]).output.splitlines()
    assert "Listener: 2 connections, 4 streams, last trade 0.0 s ago, lag none yet" in lines


def test_every_shard_the_watchdog_keeps_is_reported_where_listener_shards_is_unset(
        app, runner):
    """A second shell without LISTENER_SHARDS=2 still sees shard 1 (here, dead)."""
    beating(app)
    with app.app_context():
        app.config["LISTENER_SHARDS"] = 2
        listener_watchdog()  # as make run's worker runs it, LISTENER_SHARDS=2 set
        app.config["LISTENER_SHARDS"] = 1
    result = runner.invoke(args=["status"])
    assert result.exit_code == 1
    assert any(line.startswith("  shard 1: ") for line in result.output.splitlines()), \
        result.output


def test_something_unhealthy_exits_1_and_says_which(app, runner):
    beating(app)
    with app.app_context():
        gate = delivery_breaker("email")
        for _ in range(gate.threshold):
            gate.failure("SMTP 421 try later")
    result = runner.invoke(args=["status"])
    assert result.exit_code == 1
    assert "  ! breaker open: delivery-email (SMTP 421 try later)" in result.output.splitlines()
    with app.app_context():
        gate.success()
    said = runner.invoke(args=["status"]).output.splitlines()
    [line] = [line for line in said if line.startswith("  delivery-email ")]
    assert "closed" in line and "last error (since recovered): SMTP 421 try later" in line


@pytest.mark.parametrize("url, shown", [
    ("redis://:s3cret@127.0.0.1:1/0", "redis://***@127.0.0.1:1/0"),
    ("redis://:s3cr@t@127.0.0.1:1/0", "redis://***@127.0.0.1:1/0"),
    ("redis://127.0.0.1:1/0?password=s3cret", "redis://127.0.0.1:1/0?password=***")])
def test_it_names_the_redis_it_reads_and_where_that_came_from(make_app, url, shown):
    app = make_app(REDIS_URL=url)
    said = app.test_cli_runner().invoke(args=["status"]).output
    assert f"Redis: {shown} (the app's settings)" in said.splitlines(), said
    assert "s3cr" not in said


def test_json_holds_the_same_facts_and_the_failed_jobs(app, runner):
    with app.app_context():
        job = enqueue(explode, "json")
    run_jobs(app)
    result = runner.invoke(args=["status", "--json"])
    assert result.exit_code == 1  # nothing beats here: no listener, no worker
    facts = json.loads(result.output)
    assert facts["status"] == "degraded" and "process missing: no live worker" in facts["problems"]
    [failed] = facts["failed_jobs"]
    assert failed["id"] == job.id and failed["error"] == "RuntimeError: provider said no: json"
    assert facts["queues"]["default"] == {"waiting": 0, "failed": 1}
    assert set(facts["deliveries"]) == {"hour", "day", "waiting"}


def locked_commit():
    """A job failing as one meeting a locked database does: SQLAlchemy's error ends with a
    link to its docs, not with what went wrong."""
    raise sqlalchemy.exc.OperationalError("UPDATE delivery_log", {},
                                          sqlite3.OperationalError("database is locked"))


def test_failed_jobs_are_retried_from_the_command_line(app, runner):
    """Two shells: one lists what failed (flask status), the other retries it."""
    with app.app_context():
        one, two = enqueue(explode, "one"), enqueue(locked_commit)
    run_jobs(app)
    listed = runner.invoke(args=["status", "--json"])
    errors = {j["id"]: j["error"] for j in json.loads(listed.output)["failed_jobs"]}
    assert errors[two.id].endswith("database is locked")  # what went wrong, not a link
    retried = runner.invoke(args=["jobs", "retry", one.id])
    assert retried.exit_code == 0 and f"retried {one.id}" in retried.output
    again = runner.invoke(args=["jobs", "retry", one.id])  # no longer failed: said, exit 1
    assert again.exit_code == 1 and f"no failed job {one.id}" in again.output
    with app.app_context():  # more than a page of them (flask status lists 50)
        many = [enqueue(explode, f"many {i}").id for i in range(jobs.DEFAULT_LIMIT + 5)]
    run_jobs(app)
    every = runner.invoke(args=["jobs", "retry", "--all"])
    assert every.exit_code == 0 and f"retried {two.id}" in every.output
    assert all(f"retried {job_id}" in every.output for job_id in many)
    assert runner.invoke(args=["jobs", "retry"]).exit_code == 2  # neither ids nor --all
    with app.app_context():
        assert set(Queue("default", connection=rq_connection()).job_ids) == {
            one.id, two.id, *many}
        assert jobs.failed_ids() == []
    nothing = runner.invoke(args=["jobs", "retry", "--all"])  # said, not silent
    assert nothing.exit_code == 0 and nothing.output == "no failed jobs\n"


def test_a_redis_that_does_not_answer_is_reported_not_raised(make_app, refused_port):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{refused_port}/0")
    result = app.test_cli_runner().invoke(args=["status"])
    assert result.exit_code == 1
    assert "  ! redis: not answering" in result.output
    assert "Traceback" not in result.output


def test_a_cluster_that_does_not_answer_is_named_not_the_queues_redis(make_app, refused_port):
    """On a cluster the queues' Redis (REDIS_URL) is another: the line names the cluster."""
    app = make_app(REDIS_CLUSTER_NODES=[("127.0.0.1", refused_port)])
    result = app.test_cli_runner().invoke(args=["status"])
    assert result.exit_code == 1
    assert (f"  ! redis cluster: no node answers (REDIS_CLUSTER_NODES 127.0.0.1:{refused_port}, "
            "and those last seen;") in result.output
    assert "queues, the live feed" not in result.output and "Traceback" not in result.output


def test_a_database_that_does_not_answer_is_reported(make_app):
    app = make_app(create_tables=False)  # every query fails, as with the server away
    beating(app)
    result = app.test_cli_runner().invoke(args=["status"])
    assert result.exit_code == 1
    assert result.output.splitlines()[1:2] == ["  ! database: not answering"]


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    with FakeFeed() as feed:
        running = Product(tmp_path_factory.mktemp("status"), feed)
        running.start()
        yield running
        assert running.stop() == 0, running.output()


def test_it_answers_from_a_second_shell_while_make_run_runs(product):
    """As an operator types it: the private Redis found through the instance folder."""
    flask = Path(sys.executable).parent / "flask"
    env = {k: v for k, v in product.env.items() if k != "REDIS_URL"}
    done = subprocess.run([str(flask), "--app", "wsgi", "status"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ": ok (checked " in done.stdout
    assert "  shard 0: connected, 1 connections" in done.stdout
    assert "\nRedis: unix://" in done.stdout and "(make run's private Redis)" in done.stdout


def test_after_ctrl_c_and_a_start_again_only_the_live_processes_are_listed(product):
    """Every process, the web workers too, leaves the list as it stops: none shows as silent
    for the hour a dead one is kept."""
    before = {role: product.pids(role) for role in ("web", "worker", "listener", "scheduler")}
    assert all(before.values()), before
    assert product.stop() == 0, product.output()
    product.start()
    assert product.wait_healthy(60), product.output()
    listed = {p["pid"] for role in before
              for p in product.health()["processes"][role]["processes"]}
    assert not listed & set().union(*before.values()), product.output()


def test_a_beat_a_little_ahead_of_this_clock_reads_as_now():
    from webapp.admin.cli import _age

    assert _age(-40) == "0.0 s ago"  # it read "-0.0 s ago" (another host's clock ahead)
    assert _age(1500) == "1.5 s ago" and _age(None) == "never"
