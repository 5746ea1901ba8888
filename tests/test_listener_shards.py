"""Sharded listeners (LISTENER_SHARDS): a stable split of the symbols, a lease, a job and a
status per shard, and one budget of connection attempts shared through Redis."""

import json
import logging
import os
import subprocess
import sys
import threading
import time

import pytest
from rq.job import Job

from devtools import launch
from tests.test_listener import Recorder, eventually
from webapp import clock, keys
from webapp.accounts import service as accounts
from webapp.alerts import index as alert_index
from webapp.alerts import service as alerts
from webapp.core import health
from webapp.core.queues import STREAM_QUEUE, get_queue, rq_connection
from webapp.extensions import get_redis
from worker.listener import shards
from worker.listener.connect_budget import ConnectBudget
from worker.listener.hosting import listener_watchdog, rebuild_alert_index, run_listener
from worker.listener.pacing import AttemptBudget, Backoff
from worker.listener.pool import ListenerPool
from worker.listener.subscriptions import streams_for, wanted_symbols

COINS = [f"S{n:02d}USDT" for n in range(40)]


def of_shard(shard, n=2, count=2):
    """The first `n` test symbols that shard `shard` of `count` follows."""
    return [s for s in COINS if shards.shard_of(s, count) == shard][:n]


def test_the_split_is_the_same_in_every_process_and_python_run():
    here = {s: shards.shard_of(s, 3) for s in COINS}
    code = ("import json; from worker.listener.shards import shard_of; "
            f"print(json.dumps({{s: shard_of(s, 3) for s in {COINS!r}}}))")
    for seed in ("1", "2"):  # str hashes differ between these runs; CRC-32 does not
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                             capture_output=True, text=True, cwd=launch.ROOT).stdout
        assert json.loads(out) == here
    assert set(here.values()) == {0, 1, 2}
    assert shards.shard_of("s00usdt", 3) == here["S00USDT"]  # case does not move a symbol


def test_each_shard_wants_only_its_symbols_and_together_all(r):
    r.hset(keys.SYMBOLS, mapping=dict.fromkeys(COINS, 1))
    parts = [wanted_symbols(r, shard, 3) for shard in range(3)]
    assert set().union(*parts) == set(COINS) and sum(map(len, parts)) == len(COINS)
    assert wanted_symbols(r) == set(COINS)  # one shard: every symbol, as before


def test_shard_zero_keeps_the_single_listener_names():
    assert keys.listener_status(0) == keys.LISTENER == "tb:listener"
    assert keys.listener_lease(0) == keys.LISTENER_LEASE == "tb:listener:lease"
    assert shards.job_id(0) == "tickerbell-listener"
    assert len({keys.listener_lease(k) for k in range(3)}) == 3
    assert len({keys.listener_status(k) for k in range(3)} | {keys.listener_lease(0)}) == 4


@pytest.fixture
def sharded(make_app, feed):
    return make_app(BINANCE_WS_URL=feed.url, LISTENER_SHARDS=2, LISTENER_LEASE_TTL_S=0.6,
                    LISTENER_BACKOFF_BASE_S=0.01, LISTENER_BACKOFF_MAX_S=0.1)


def host(app, shard):
    """Run shard `shard`'s job function in a thread, as a worker of the stream queue would."""

    def target():
        with app.app_context():
            run_listener(shard)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def notified(r, uid):
    return [json.loads(f["data"])["alert_id"] for _, f in r.xrange(keys.replay(uid))]


def test_two_shards_each_carry_their_own_streams_and_alerts_fire_once(sharded, feed):
    r = sharded.extensions["redis"]
    symbols = of_shard(0) + of_shard(1)
    with sharded.app_context():
        uid = accounts.create_user("shards@example.com", "long password").id
        ids = [str(alerts.create_alert(uid, {"symbol": s, "type": "above", "price": 10}).id)
               for s in symbols]
    threads = [host(sharded, shard) for shard in (0, 1)]
    try:
        wanted = [set(streams_for(of_shard(0))), set(streams_for(of_shard(1)))]
        assert feed.wait(lambda f: sorted(f.client_streams(), key=sorted) ==
                         sorted(wanted, key=sorted), timeout=15), feed.client_streams()
        for symbol in symbols:
            feed.trade(symbol, 11)
            feed.trade(symbol, 12)  # the alert already fired: nothing more
        assert eventually(lambda: len(notified(r, uid)) >= 4, timeout=10)
        assert sorted(notified(r, uid)) == sorted(ids)
        assert eventually(lambda: all(r.hget(keys.listener_status(k), "state") == "connected"
                                      for k in (0, 1)))
        assert {r.hget(keys.listener_status(k), "streams") for k in (0, 1)} == {"4"}
        leases = [r.get(keys.listener_lease(k)) for k in (0, 1)]
        assert all(leases) and leases[0] != leases[1]
    finally:
        for shard in (0, 1):  # a lost lease stops a shard
            r.set(keys.listener_lease(shard), "intruder")
        for thread in threads:
            thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert feed.connections_total == 2


def test_the_watchdog_keeps_one_job_per_shard(sharded):
    with sharded.app_context():
        assert listener_watchdog() == "enqueued,enqueued"
        assert listener_watchdog() == "queued,queued"
        assert get_queue(STREAM_QUEUE).job_ids == ["tickerbell-listener", "tickerbell-listener-1"]
        assert Job.fetch("tickerbell-listener-1", connection=rq_connection()).kwargs == {
            "shard": 1}
        get_redis().set(keys.listener_lease(0), "someone", px=5000)
        assert listener_watchdog().startswith("running,")


def test_a_starting_shard_rebuilds_its_own_symbols_only(sharded):
    """The others are their live shards' to keep (and change with every tick of a storm)."""
    r = sharded.extensions["redis"]
    mine, theirs = of_shard(0, n=1), of_shard(1, n=1)
    with sharded.app_context():
        uid = accounts.create_user("rebuild@example.com", "long password").id
        for symbol in mine + theirs:
            alerts.create_alert(uid, {"symbol": symbol, "type": "above", "price": 10})
        r.flushall()
        rebuild_alert_index(r, None, shard=0, count=2)
        assert alert_index.symbols() == {mine[0]: 1}
        rebuild_alert_index(r, None, shard=1, count=2)
        assert alert_index.symbols() == {mine[0]: 1, theirs[0]: 1}


def test_two_watchdogs_at_once_leave_one_job_in_the_queue(sharded):
    """The periodic watchdog and a starting listener's both found shard 1's job gone: one
    checks and enqueues while the other waits its turn, and no stale copy stays queued."""
    with sharded.app_context():
        queue = get_queue(STREAM_QUEUE)
        rq_connection().set(keys.listener_watch(1), "another watchdog", ex=10)
        assert listener_watchdog() == "enqueued,watched"
        assert queue.job_ids == ["tickerbell-listener"]
        rq_connection().delete(keys.listener_watch(1))
        for _ in range(2):  # copies a race left before
            queue.connection.rpush(queue.key, "tickerbell-listener-1")
        assert listener_watchdog() == "queued,enqueued"
        assert queue.job_ids == ["tickerbell-listener", "tickerbell-listener-1"]
        assert not rq_connection().exists(keys.listener_watch(0), keys.listener_watch(1))


def test_a_job_a_worker_just_took_is_starting_not_lost(sharded):
    """Between a worker taking a job from the queue and marking it started, the job is
    queued yet out of the queue: a watchdog then must not enqueue a copy (it would hold the
    next listener process 30 s as a standby), unless that lasts past a lease's TTL."""
    sharded.config["LISTENER_LEASE_TTL_S"] = 2  # 0.6 s: a slow machine outlived "starting"
    with sharded.app_context():
        queue = get_queue(STREAM_QUEUE)
        assert listener_watchdog() == "enqueued,enqueued"
        queue.connection.lrem(queue.key, 0, "tickerbell-listener")  # a worker took it
        assert listener_watchdog() == "starting,queued"
        assert queue.job_ids == ["tickerbell-listener-1"]
        time.sleep(sharded.config["LISTENER_LEASE_TTL_S"] + 0.1)  # it never started: lost
        assert listener_watchdog() == "enqueued,queued"
        assert sorted(queue.job_ids) == ["tickerbell-listener", "tickerbell-listener-1"]


def test_a_second_job_of_a_held_shard_gives_its_process_back(sharded, caplog):
    """The watchdog re-queued shard 1's job during an outage while its listener lived on:
    the copy does not wait on the lease for ever, holding a process another shard needs;
    it says so. One started by hand (`flask listener --shard 1`) waits as long as it takes:
    the drill's ended, silent, 31 s later."""
    caplog.set_level(logging.INFO)
    with sharded.app_context():
        get_redis().set(keys.listener_lease(1), "another-host:1:x", px=60_000)
        outcome = []
        jobs = [threading.Thread(target=lambda: outcome.append(_run_in(sharded, 1)), daemon=True),
                threading.Thread(target=lambda: outcome.append(_run_in(sharded, 1, True)),
                                 daemon=True)]
        for job in jobs:
            job.start()
        try:
            jobs[0].join(10)  # gives up after 3 lease TTLs (1.8 s here)
            assert outcome == ["standby"] and jobs[1].is_alive()
            assert any("event=standby_ended shard=1" in m for m in caplog.messages)
        finally:  # the standby takes over, then loses the lease, so it stops
            get_redis().delete(keys.listener_lease(1))
            assert eventually(lambda: get_redis().get(keys.listener_lease(1)) is not None)
            get_redis().set(keys.listener_lease(1), "intruder")
            jobs[1].join(10)
        assert outcome == ["standby", "stopped"]


def _run_in(app, shard, standby=False):
    with app.app_context():
        return run_listener(shard, standby=standby)


def test_a_shard_number_past_the_count_is_refused(sharded):
    result = sharded.test_cli_runner().invoke(args=["listener", "--shard", "2"])
    assert result.exit_code != 0 and "LISTENER_SHARDS is 2" in result.output



def test_a_hand_run_listener_follows_the_running_count_or_refuses_another(make_app,
                                                                           monkeypatch):
    """Started in a second shell without LISTENER_SHARDS, beside listeners split two ways, a
    `flask listener --direct` took shard 0's lease as a single listener of every symbol, so
    shard 1's symbols had two listeners."""
    app = make_app()  # this shell: LISTENER_SHARDS unset, so 1
    app.extensions["redis"].set(keys.LISTENER_SHARDS, 2)  # the running watchdog's word
    monkeypatch.delenv("LISTENER_SHARDS", raising=False)
    followed = app.test_cli_runner().invoke(args=["listener", "--shard", "2"])
    assert "following the running listeners' 2" in followed.output
    assert followed.exit_code != 0 and "LISTENER_SHARDS is 2: 0 to 1" in followed.output
    monkeypatch.setenv("LISTENER_SHARDS", "3")
    other = make_app(LISTENER_SHARDS=3).test_cli_runner().invoke(args=["listener", "--direct"])
    assert other.exit_code == 2
    assert "set LISTENER_SHARDS=2 here, or restart every listener" in other.output


def test_a_second_shells_worker_and_listener_without_the_count_upset_no_split(make_app,
                                                                              monkeypatch):
    """Beside listeners split two ways, a process whose LISTENER_SHARDS is unset: its
    watchdog (a `flask worker` runs it) said 1 and watched shard 0 alone, and a plain
    `flask listener` took any shard's job as the single listener's (shard 1's: retired)."""
    monkeypatch.delenv("LISTENER_SHARDS", raising=False)
    app = make_app()
    assert app.config["LISTENER_SHARDS"] is None  # unset: 1, but not said to the others
    r = app.extensions["redis"]
    r.set(keys.LISTENER_SHARDS, 2, ex=30)  # a watchdog with the count set said it
    with app.app_context():
        assert shards.following(app.config) == 2
        assert listener_watchdog() == "enqueued,enqueued"  # both shards watched
        assert get_redis().get(keys.LISTENER_SHARDS) == "2"  # and the split left as said
        r.delete(keys.LISTENER_SHARDS)  # lapsed: shard 0's listener says it with each beat
        r.hset(keys.listener_status(0), mapping={"shards": 3, "heartbeat": clock.now_ms()})
        assert shards.following(app.config) == 3
        r.hset(keys.listener_status(0), "heartbeat", clock.now_ms() - 60_000)  # long dead
        assert shards.following(app.config) == 1
        assert listener_watchdog() == "queued"  # nothing running says a count: 1
        assert get_redis().get(keys.LISTENER_SHARDS) is None  # and it says nothing
        assert run_listener(shard=1) == "retired"  # a job of a split gone: retired


def test_the_shared_budget_refuses_the_attempt_past_it_across_shards(r):
    local = lambda: AttemptBudget(burst=100, per_s=1e-9)  # noqa: E731 (only Redis limits here)
    first, second = (ConnectBudget(r, host="box", budget=3, window_s=60, local=local())
                     for _ in range(2))
    assert [first.take(), second.take(), first.take()] == [0.0, 0.0, 0.0]
    wait = second.take()
    assert 59 < wait <= 60  # until the first attempt leaves the window
    assert first.take() > 0 and r.zcard(keys.connect_budget("box")) == 3
    assert int(second.local.tokens) == 99  # one attempt made; the refused one given back
    other = ConnectBudget(r, host="elsewhere", budget=3, window_s=60, local=local())
    assert other.take() == 0.0  # another egress IP has a budget of its own


def test_the_window_slides(r):
    budget = ConnectBudget(r, host="box", budget=1, window_s=1)
    assert budget.take() == 0.0
    wait = budget.take()
    assert 0 < wait <= 1
    threading.Event().wait(wait + 0.05)  # the wait the budget itself asked for
    assert budget.take() == 0.0


def test_without_redis_the_local_bucket_alone_decides(redis_url):
    import redis as redis_py

    gone = redis_py.Redis(port=1, socket_connect_timeout=0.2)
    budget = ConnectBudget(gone, budget=1, window_s=60, local=AttemptBudget(burst=2, per_s=1e-9))
    assert [budget.take(), budget.take()] == [0.0, 0.0]
    assert budget.take() > 0


def test_listeners_sharing_a_small_budget_defer_instead_of_connecting(r, feed, caplog):
    caplog.set_level(logging.INFO, logger="worker.listener")
    deferred = lambda: [m for m in caplog.messages  # noqa: E731
                        if m.startswith("event=connect_deferred reason=attempt_budget")]
    r.hset(keys.SYMBOLS, mapping=dict.fromkeys(of_shard(0) + of_shard(1), 1))
    pools = [ListenerPool(r, Recorder(), feed.url, shard=k, shards=2, poll_s=0.02,
                          heartbeat_s=0.05, recv_timeout_s=0.02,
                          backoff=lambda: Backoff(0.01, 0.05),
                          attempts=ConnectBudget(r, host="box", budget=3, window_s=60))
             for k in (0, 1)]
    threads = [threading.Thread(target=p.run, daemon=True) for p in pools]
    for thread in threads:
        thread.start()
    try:
        assert feed.wait(lambda f: f.connection_count == 2, timeout=10)
        feed.drop_all()  # both reconnect: the third attempt is allowed, the fourth is not
        assert feed.wait(lambda f: f.connections_total == 3, timeout=10)
        assert eventually(deferred, timeout=10)  # the other waits for the window
        assert feed.connections_total == 3 and r.zcard(keys.connect_budget("box")) == 3
        assert feed.connection_count == 1
    finally:
        for pool in pools:
            pool.stop.set()
        for thread in threads:
            thread.join(10)


def test_health_reports_every_shard(app):
    now = clock.now_ms()
    with app.app_context():
        r = get_redis()
        r.hset(keys.listener_status(0), mapping={"state": "connected", "heartbeat": now,
                                                 "streams": 4, "connections": 1})
        r.hset(keys.listener_status(1), mapping={"state": "backoff", "heartbeat": now,
                                                 "last_error": "refused"})
        one, _ = health.report(r, now_ms=now, shards=1)
        two, _ = health.report(r, now_ms=now, shards=2)
    assert one["monitoring"]["status"] == "ok" and len(one["monitoring"]["shards"]) == 1
    assert one["monitoring"]["stream"] == "open" and one["monitoring"]["streams"] == 4
    monitoring = two["monitoring"]
    assert monitoring["status"] == "down" and monitoring["state"] == "backoff"
    assert monitoring["last_error"] == "refused" and monitoring["streams"] == 4
    assert [(s["shard"], s["status"]) for s in monitoring["shards"]] == [(0, "ok"), (1, "down")]
    assert two["status"] == "degraded"


def test_make_run_starts_one_listener_process_per_shard():
    assert [n for n in launch.commands(8000, None) if n.startswith("listener")] == ["listener"]
    names = [n for n in launch.commands(8000, None, shards=3) if n.startswith("listener")]
    assert names == ["listener-1", "listener-2", "listener-3"]
    assert launch.shard_count({"LISTENER_SHARDS": "3"}) == 3
