"""The events intake's fast path: service tokens remembered per process until a revoke, and
the slow steps in a Redis stream drained by RQ jobs (webapp/notify/slowsteps.py)."""

import json

from sqlalchemy import event as sql_event

from tests.hub import make_user, run_jobs
from webapp import keys
from webapp.core.queues import STOPPING, get_queue, rq_connection
from webapp.extensions import db, get_redis, is_cluster
from webapp.models import CriticalNotification, ServiceToken, utcnow
from webapp.notify import slowsteps, token_cache
from worker.runner import JobWorker


def post(client, token, body):
    return client.post("/api/v1/events", data=json.dumps(body),
                       headers={"Authorization": f"Bearer {token}"},
                       content_type="application/json")


def critical(uid, title="Limit hit"):
    return {"type": "RISK_VIOLATION", "user_id": uid, "title": title}


def audited(app):
    with app.app_context():
        return db.session.scalar(db.select(db.func.count(CriticalNotification.id)))


def queries_with(app, text):
    """A list that grows by one for every SQL statement holding `text`."""
    seen = []
    with app.app_context():
        sql_event.listen(db.engine, "before_cursor_execute",
                         lambda *a: seen.append(1) if text in a[2] else None)
    return seen


def token_queries(app):
    return queries_with(app, "service_tokens")


def test_a_revoked_token_stops_working_at_once_in_another_process(app, make_app, runner, token):
    other = make_app(create_tables=False)  # a second web process on the same SQL and Redis
    uid = make_user(app, "a@example.com")
    assert post(other.test_client(), token, critical(uid)).status_code == 202
    assert post(other.test_client(), token, critical(uid)).status_code == 202  # remembered
    assert runner.invoke(args=["tokens", "revoke", "order-system"]).exit_code == 0
    assert post(other.test_client(), token, critical(uid)).status_code == 401
    assert post(app.test_client(), token, critical(uid)).status_code == 401


def test_a_known_token_is_read_from_sql_once_until_a_revoke(app, client, runner, token):
    uid = make_user(app, "b@example.com")
    queries = token_queries(app)
    for _ in range(3):
        assert post(client, token, critical(uid)).status_code == 202
    assert len(queries) == 1
    runner.invoke(args=["tokens", "create", "other"])
    runner.invoke(args=["tokens", "revoke", "other"])  # any revoke: every token is read again
    before = len(queries)
    assert post(client, token, critical(uid)).status_code == 202
    assert post(client, token, critical(uid)).status_code == 202
    assert len(queries) == before + 1


def revoke_in_sql_only(app, name):
    """A revoke whose message no process heard (sent while their subscriptions were down)."""
    with app.app_context():
        db.session.execute(db.update(ServiceToken).where(ServiceToken.name == name)
                           .values(revoked_at=utcnow()))
        db.session.commit()


def test_a_lost_subscription_cannot_keep_a_revoked_token_alive(app, client, token):
    uid = make_user(app, "c@example.com")
    assert post(client, token, critical(uid)).status_code == 202
    revoke_in_sql_only(app, "order-system")
    assert post(client, token, critical(uid)).status_code == 202  # remembered: no message
    with app.app_context():  # Redis restarted, say: the subscription's connection is gone
        assert get_redis().client_kill_filter(_type="pubsub") >= 1
    assert post(client, token, critical(uid)).status_code == 401


def test_a_subscription_silent_too_long_is_not_trusted(app, client, token):
    uid = make_user(app, "j@example.com")
    assert post(client, token, critical(uid)).status_code == 202
    revoke_in_sql_only(app, "order-system")
    app.extensions["service_tokens"].answered -= token_cache.STALE_S + 1  # no answer lately
    assert post(client, token, critical(uid)).status_code == 401


def test_a_known_token_needs_no_redis_read_per_request(app, client, token):
    uid = make_user(app, "k@example.com")
    assert post(client, token, critical(uid)).status_code == 202
    with app.app_context():
        get_redis().config_resetstat()
        assert post(client, token, critical(uid)).status_code == 202
        commands = get_redis().info("commandstats")
    assert "cmdstat_get" not in commands  # the inbox script and the routed XADD only


def test_one_redis_stores_and_queues_an_event_in_one_script_call(app, client, token):
    uid = make_user(app, "n@example.com")
    with app.app_context():
        get_redis().config_resetstat()
    posted = client.post("/api/v1/events", data=json.dumps(critical(uid, "one call")),
                         headers={"Authorization": f"Bearer {token}", "X-Request-ID": "r-1"},
                         content_type="application/json")
    assert posted.status_code == 202
    with app.app_context():
        stats = get_redis().info("commandstats")
        (_, fields), = get_redis().xrange(keys.routed("high"))
    assert stats["cmdstat_evalsha"]["calls"] == 1  # the inbox script, which queued it too
    batch = json.loads(fields["batch"])
    assert fields["request_id"] == "r-1"
    assert [(n["id"], n["title"], n["user_id"]) for n in batch] == [
        (posted.json["ids"][0], "one call", uid)]
    run_jobs(app)
    assert audited(app) == 1


def user_queries(app):
    return queries_with(app, "users.id IN")


def test_a_user_seen_to_exist_is_read_from_sql_once(app, client, token):
    uid = make_user(app, "l@example.com")
    queries = user_queries(app)
    for _ in range(3):
        assert post(client, token, critical(uid)).status_code == 202
    assert len(queries) == 1


def test_an_unknown_user_is_not_remembered_and_is_accepted_once_made(app, client, token):
    assert post(client, token, critical(1)).status_code == 422  # no user 1 yet
    assert make_user(app, "m@example.com") == 1
    assert post(client, token, critical(1)).status_code == 202


def test_requests_add_to_the_stream_and_one_drain_job_runs_their_slow_steps(app, client,
                                                                             token):
    uid = make_user(app, "d@example.com")
    for i in range(3):
        assert post(client, token, critical(uid, f"limit {i}")).status_code == 202
    with app.app_context():
        assert get_redis().xlen(keys.routed("high")) == 3
        assert len(get_queue("high").jobs) == 1  # the later requests found a drain waiting
    run_jobs(app)
    assert audited(app) == 3
    with app.app_context():
        assert get_redis().xlen(keys.routed("high")) == 0  # acknowledged and deleted
        assert get_redis().exists(keys.routed_kick("high")) == 0
    assert post(client, token, critical(uid, "after")).status_code == 202
    run_jobs(app)  # the first batch after a drain started kicks a new one
    assert audited(app) == 4


def test_a_batch_of_1000_waits_in_batches_of_100(app, client, token):
    uid = make_user(app, "e@example.com")
    assert post(client, token, [critical(uid, f"l{i}") for i in range(1000)]).status_code == 202
    with app.app_context():
        entries = get_redis().xrange(keys.routed("high"))
    assert [len(json.loads(fields["batch"])) for _, fields in entries] == [100] * 10
    run_jobs(app)
    assert audited(app) == 1000


def test_a_drain_job_past_its_time_budget_hands_the_rest_to_the_next(app, client, token):
    """Never cut off by RQ's job timeout mid-batch (that batch would wait for the safety net's
    minute): it stops between reads and queues the next job, which goes on."""
    uid = make_user(app, "budget@example.com")
    for n in range(3):  # 30 batches of 100: more than one read takes
        body = [critical(uid, f"b{n}-{i}") for i in range(1000)]
        assert post(client, token, body).status_code == 202
    with app.app_context():
        get_queue("high").empty()  # the kicked job: this test runs the drain itself
        assert slowsteps.drain("high", budget_s=0) == slowsteps.DEFAULT_COUNT
        drains = [j for j in get_queue("high").jobs if j.func_name.endswith(".drain")]
        assert len(drains) == 1  # the next, queued by the one that stopped
    run_jobs(app)
    assert audited(app) == 3000


def test_a_worker_asked_to_stop_ends_its_drain_between_batches(app, client, token):
    """Ctrl-C on make run: the worker waits for its job, and the launcher kills it after 10 s.
    A drain of a backlog took longer (a drill: 3 of 4 stops killed the worker mid-job); it
    now ends at its next batch and queues the rest for the next start."""
    uid = make_user(app, "stop@example.com")
    body = [critical(uid, f"s{i}") for i in range(300)]
    assert post(client, token, body).status_code == 202
    with app.app_context():
        get_queue("high").empty()
        JobWorker(["high"], connection=rq_connection()).handle_warm_shutdown_request()
        try:
            assert slowsteps.drain("high") == 0
            assert slowsteps.safety_net(min_idle_ms=0) == 0
        finally:
            STOPPING.clear()
        assert get_redis().xlen(keys.routed("high")) == 3  # each batch waits, none read
        assert [j.func_name.endswith(".drain") for j in get_queue("high").jobs] == [True]
    run_jobs(app)  # the next start
    assert audited(app) == 300


def test_batches_read_when_the_worker_is_asked_to_stop_go_to_the_next_start(
        app, client, token, monkeypatch):
    """Left pending under the stopped drain, the rest of its read waited for the safety
    net's idle minute; handed back, the next start's drain runs them."""
    uid = make_user(app, "stop2@example.com")
    assert post(client, token, [critical(uid, f"t{i}") for i in range(300)]).status_code == 202
    process_batch = slowsteps.steps.process_batch

    def stop_after_the_first(batch):
        try:
            return process_batch(batch)
        finally:
            STOPPING.set()  # Ctrl-C while the first batch ran

    monkeypatch.setattr(slowsteps.steps, "process_batch", stop_after_the_first)
    with app.app_context():
        get_queue("high").empty()
        try:
            assert slowsteps.drain("high") == 1
        finally:
            STOPPING.clear()
        r = get_redis()
        assert r.xlen(keys.routed("high")) == 2
        assert r.xpending(keys.routed("high"), slowsteps.GROUP)["pending"] == 0
    monkeypatch.undo()
    run_jobs(app)  # the next start: no safety net, no idle minute
    assert audited(app) == 300


def test_the_safety_net_finishes_batches_of_a_drain_job_that_died(app, client, token):
    uid = make_user(app, "f@example.com")
    assert post(client, token, critical(uid)).status_code == 202
    with app.app_context():
        get_queue("high").empty()  # the kick's job is lost (its web process died, say)
        slowsteps.ensure_group(get_redis(), "high")
        taken = get_redis().xreadgroup(slowsteps.GROUP, "died", {keys.routed("high"): ">"})
        assert len(taken[0][1]) == 1  # read by a drain job that died before its steps ran
        assert slowsteps.safety_net() == 0  # not yet stale: a live drain may be at work
        assert slowsteps.safety_net(min_idle_ms=0) == 1
        assert get_redis().xlen(keys.routed("high")) == 0
    assert audited(app) == 1


def test_the_safety_net_drains_batches_whose_kick_was_lost(app, client, token):
    uid = make_user(app, "g@example.com")
    assert post(client, token, critical(uid)).status_code == 202
    with app.app_context():
        get_queue("high").empty()
        assert slowsteps.safety_net() == 1
    assert audited(app) == 1


def test_a_batch_that_keeps_failing_is_parked(app):
    with app.app_context():
        r = get_redis()
        r.xadd(keys.routed("default"), {"batch": "not json"})
        for _ in range(slowsteps.MAX_DELIVERIES):
            slowsteps.safety_net(min_idle_ms=0)
        assert r.xlen(keys.routed("default")) == 1  # failed 5 times, parked at the next look
        slowsteps.safety_net(min_idle_ms=0)
        assert r.xlen(keys.routed("default")) == 0
        assert [f["batch"] for _, f in r.xrange(keys.ROUTED_DEAD)] == ["not json"]


def test_the_slow_steps_run_from_the_stream_on_a_cluster_data_plane(make_cluster_app):
    app = make_cluster_app()
    token = app.test_cli_runner().invoke(args=["tokens", "create", "o"]).output.split()[-1]
    uid = make_user(app, "h@example.com")
    client = app.test_client()
    assert post(client, token, [critical(uid, "one"), critical(uid, "two")]).status_code == 202
    assert post(client, token, critical(uid, "three")).status_code == 202
    with app.app_context():
        assert is_cluster(get_redis()) and get_redis().xlen(keys.routed("high")) == 2
    run_jobs(app)  # RQ on REDIS_URL, the stream on the cluster
    assert audited(app) == 3


def test_a_request_never_holds_one_sql_connection_while_it_waits_for_another(make_app):
    # 16 concurrent first requests on 15 connections waited on each other until the pool's
    # timeout: each held the token lookup's while it asked for the known-users check's
    app = make_app(SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0,
                                              "pool_timeout": 0.5})
    token = app.test_cli_runner().invoke(args=["tokens", "create", "o"]).output.split()[-1]
    uid = make_user(app, "i@example.com")
    with app.app_context():
        db.engine.dispose()  # the set-up's connection goes; the request has the pool's one
    assert post(app.test_client(), token, critical(uid)).status_code == 202


def test_tokens_are_remembered_and_revoked_at_once_on_a_cluster_data_plane(make_cluster_app):
    app = make_cluster_app()
    runner = app.test_cli_runner()
    token = runner.invoke(args=["tokens", "create", "o"]).output.split()[-1]
    uid = make_user(app, "o@example.com")
    client, queries = app.test_client(), token_queries(app)
    for _ in range(2):
        assert post(client, token, critical(uid)).status_code == 202
    assert len(queries) == 1  # the subscription is up on the cluster too
    assert runner.invoke(args=["tokens", "revoke", "o"]).exit_code == 0
    assert post(client, token, critical(uid)).status_code == 401
