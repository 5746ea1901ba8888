"""The app with its data plane on a real Redis Cluster (REDIS_CLUSTER_NODES): the inbox and
alerts APIs, events intake, rate limits, /health and the jobs that touch many keys.

RQ stays on REDIS_URL (the session's single Redis). Matching, the listener and live streams
on a cluster have tests of their own (test_matcher_cluster.py, test_fanout_live.py).
"""

import json
from types import SimpleNamespace

import pytest
from rq import Queue

from tests.cluster import nodes_config
from tests.conftest import AuthActions
from webapp import clock, keys
from webapp.core.queues import rq_connection
from webapp.delivery import plan
from webapp.extensions import get_redis, is_cluster
from webapp.inbox import service as inbox
from webapp.market import symbols
from worker import jobs


@pytest.fixture
def app(make_cluster_app):
    return make_cluster_app()


@pytest.fixture
def users(app, client, auth):
    """Two users, the first with an API key: ((headers, uid), other uid)."""
    uid, other = auth.create(), auth.create("other@example.com")
    return ({"X-API-Key": auth.api_key()}, uid), other


def store(app, uid, *titles):
    with app.app_context():
        return [inbox.store({"user_id": uid, "type": "PRICE_ALERT", "title": title})[0]
                for title in titles]


def own(app, uid, nids):
    """Only the given notifications: account set-up notified the user of its own events."""
    return [n for n in listed(app, uid) if n["id"] in nids]


def listed(app, uid):
    with app.app_context():
        return inbox.list_page(uid, limit=100)[0]


def test_the_data_plane_is_the_cluster_and_rq_stays_on_redis_url(app, rc, r):
    with app.app_context():
        assert is_cluster(get_redis())
        rq_connection().set("rq-probe", "here")
    assert r.get("rq-probe") == "here" and rc.get("rq-probe") is None


def test_the_inbox_contract_holds_on_a_cluster(app, client, users, rc):
    (headers, uid), _ = users
    first, second, third = store(app, uid, "one", "two", "three")

    page = client.get("/api/v1/notifications?unread=1", headers=headers)
    assert page.status_code == 200
    assert [n["id"] for n in page.get_json()][:3] == [third, second, first]
    unread = int(page.headers["X-Unread-Count"])

    read = client.patch(f"/api/v1/notifications/{second}/read", headers=headers)
    assert read.status_code == 200 and read.get_json()["status"] == "read"
    assert int(read.headers["X-Unread-Count"]) == unread - 1

    assert client.delete(f"/api/v1/notifications/{first}", headers=headers).status_code == 204
    assert client.delete(f"/api/v1/notifications/{first}", headers=headers).status_code == 404
    assert client.get(f"/api/v1/notifications/{first}", headers=headers).status_code == 404

    everything = client.post("/api/v1/notifications/read-all", headers=headers).get_json()
    assert everything["unread_count"] == 0 and everything["updated"] >= 1
    after = client.get("/api/v1/notifications", headers=headers)
    assert after.headers["X-Unread-Count"] == "0"
    assert [n["id"] for n in after.get_json()][:2] == [third, second]
    assert rc.exists(keys.replay(uid), keys.readmark(uid)) == 2  # in the user's slot


def test_one_notification_reads_on_a_cluster(app, client, users):
    # inbox.get reads in a MULTI, where redis-py 8.1's cluster pipeline leaves XRANGE's
    # reply unparsed (a list where a dict is expected): this pins the fix
    (headers, uid), _ = users
    [nid] = store(app, uid, "one")
    one = client.get(f"/api/v1/notifications/{nid}", headers=headers)
    assert one.status_code == 200 and one.get_json()["title"] == "one"


def test_a_user_never_sees_another_users_notifications(app, client, users):
    (headers, uid), other = users
    [theirs] = store(app, other, "private")
    [mine] = store(app, uid, "mine")

    ids = [n["id"] for n in client.get("/api/v1/notifications", headers=headers).get_json()]
    assert mine in ids and theirs not in ids
    for method, path in (("GET", f"/api/v1/notifications/{theirs}"),
                         ("PATCH", f"/api/v1/notifications/{theirs}/read"),
                         ("DELETE", f"/api/v1/notifications/{theirs}")):
        assert client.open(path, method=method, headers=headers).status_code == 404
    assert [n["status"] for n in own(app, other, [theirs])] == ["unread"]


def post_events(client, token, body, key):
    return client.post("/api/v1/events", data=json.dumps(body), content_type="application/json",
                       headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key})


def test_events_intake_with_an_idempotency_key_on_a_cluster(app, client, runner, users, rc):
    (_, uid), other = users
    token = runner.invoke(args=["tokens", "create", "order-system"]).output.strip().split()[-1]
    batch = [{"type": "ORDER_EXECUTED", "user_id": who, "title": f"fill {who}"}
             for who in (uid, other, uid)]

    first = post_events(client, token, batch, "retry-1")
    again = post_events(client, token, batch, "retry-1")

    assert first.status_code == again.status_code == 202
    assert again.get_json()["ids"] == first.get_json()["ids"]
    assert again.headers["Idempotent-Replayed"] == "true"
    ids = first.get_json()["ids"]
    assert len(own(app, uid, ids)) == 2 and len(own(app, other, ids)) == 1
    assert post_events(client, token, batch[:1], "retry-1").status_code == 422
    assert len(list(rc.scan_iter(match="tb:idem:*"))) == 1


def test_a_system_event_reaches_each_user_once_on_a_cluster(app, client, runner, users):
    """One event, every user: each gets a notification of their own, with its own id (the
    router writes each stored copy's id into it on a cluster)."""
    (_, uid), other = users
    token = runner.invoke(args=["tokens", "create", "ops"]).output.strip().split()[-1]
    answer = post_events(client, token, {"type": "SYSTEM_ERROR", "user_id": "system",
                                         "title": "Exchange maintenance"}, "system-1")
    ids = answer.get_json()["ids"]
    assert answer.status_code == 202 and len(ids) == len(set(ids)) == 2
    assert [n["title"] for n in own(app, uid, ids)] == ["Exchange maintenance"]
    assert [n["title"] for n in own(app, other, ids)] == ["Exchange maintenance"]


def test_a_hook_over_its_rate_answers_429_on_a_cluster(make_cluster_app):
    app = make_cluster_app(HOOK_RATE_PER_MINUTE=2)
    client = app.test_client()
    auth = AuthActions(client, app)
    auth.create()
    headers = {"X-API-Key": auth.api_key()}
    hook = client.post("/api/v1/hooks", json={"name": "tv"}, headers=headers).get_json()
    path = hook["url"].split("127.0.0.1", 1)[1].split("/", 1)[1]

    codes = [client.post(f"/{path}", data=f"alert {i}").status_code for i in range(3)]

    assert codes == [202, 202, 429]


def test_failed_logins_are_throttled_on_a_cluster(make_cluster_app):
    app = make_cluster_app(LOGIN_ATTEMPTS_PER_MINUTE=2)
    auth = AuthActions(app.test_client(), app)
    auth.create()
    codes = [auth.login(password="wrong one").status_code for _ in range(3)]
    assert codes[-1] == 429 and 429 not in codes[:2]


def test_the_delivery_rate_limit_counts_on_a_cluster(app):
    pref = SimpleNamespace(user_id=5, max_per_minute=2)
    now = clock.now_ms()
    with app.app_context():
        assert [plan.over_limit(pref, f"n{i}", now + i) for i in range(3)] == [False] * 2 + [True]


def test_alerts_create_list_delete_on_a_cluster(app, client, users, rc):
    (headers, _), _ = users
    created = client.post("/api/v1/alerts", json={"symbol": "BTCUSDT", "type": "above",
                                                  "price": 65000}, headers=headers)
    assert created.status_code == 201
    alert_id = created.get_json()["id"]
    assert rc.zscore(keys.index("BTCUSDT", "above"), alert_id) == 65000

    listed_ids = [a["id"] for a in client.get("/api/v1/alerts", headers=headers).get_json()]
    assert listed_ids == [alert_id]
    assert client.delete(f"/api/v1/alerts/{alert_id}", headers=headers).status_code == 204
    assert client.get("/api/v1/alerts", headers=headers).get_json() == []
    assert rc.zscore(keys.index("BTCUSDT", "above"), alert_id) is None


def test_a_stored_symbol_list_refuses_an_unlisted_symbol_on_a_cluster(app, client, users):
    (headers, _), _ = users
    with app.app_context():
        symbols.store(["BTCUSDT", "ETHUSDT"])  # one MULTI: the list and its meta share a tag
    refused = client.post("/api/v1/alerts", json={"symbol": "BTCUSDX", "type": "above",
                                                  "price": 1}, headers=headers)
    assert refused.status_code == 422 and "BTCUSDT" in json.dumps(refused.get_json())


def test_health_reports_the_cluster_and_the_queues_of_redis_url(app, client):
    with app.app_context():
        rq_connection().rpush(Queue.redis_queue_namespace_prefix + "default", "job")
    body = client.get("/api/v1/health").get_json()
    assert body["redis"] == "ok"
    assert body["cluster"] == {"state": "ok", "nodes": 6, "up": 6, "masters": 3}
    assert body["queues"]["default"] == 1
    assert "Redis Cluster: ok, 6 of 6 nodes up, 3 masters" in app.test_cli_runner().invoke(
        args=["status"]).output.splitlines()


def test_an_app_made_while_the_cluster_is_down_answers_503_then_recovers(make_app, redis_cluster,
                                                                        refused_port):
    nowhere = [("127.0.0.1", refused_port)]  # no node answers there
    app = make_app(REDIS_CLUSTER_NODES=nowhere)
    response = app.test_client().get("/api/v1/health")
    assert response.status_code == 503 and response.get_json()["redis"] != "ok"
    app.config["REDIS_CLUSTER_NODES"] = nodes_config(redis_cluster)  # the cluster is back
    assert app.test_client().get("/api/v1/health").get_json()["redis"] == "ok"


def test_the_cleanup_job_trims_inboxes_on_a_cluster(app, users, rc):
    (_, uid), other = users
    old = clock.now_ms() - inbox.DEFAULT_TTL_MS - 60_000
    for who in (uid, other):
        rc.delete(*keys.inbox(who))  # account set-up's notices: newer than the stale entry
        rc.xadd(keys.replay(who), {"event": "notification", "data": "{}"}, id=f"{old}-0")
        rc.xadd(keys.replay(who), {"event": "notification", "data": "{}"})
    with app.app_context():
        assert jobs.prune_redis() == 2
        assert rc.xlen(keys.replay(uid)) == rc.xlen(keys.replay(other)) == 1


def test_the_key_migration_leaves_a_cluster_alone(app, runner):
    result = runner.invoke(args=["redis-migrate"])
    assert result.exit_code == 0 and "nothing to migrate" in result.output


def test_status_names_the_queues_redis_when_it_alone_is_down(make_cluster_app, refused_port):
    """On a cluster the queues' Redis (REDIS_URL) is another: with it down and the cluster
    answering, flask status names it, not the cluster."""
    app = make_cluster_app(REDIS_URL=f"redis://127.0.0.1:{refused_port}/0")
    result = app.test_cli_runner().invoke(args=["status"])
    assert result.exit_code == 1
    assert "  ! redis (REDIS_URL): not answering" in result.output
    assert "redis cluster" not in result.output and "Traceback" not in result.output


def test_status_shows_the_queues_while_the_cluster_alone_is_down(make_app, redis_cluster,
                                                                refused_port):
    """A cluster down (a master lost mid-failover, or every node) is no reason to hide the
    queues and failed jobs, which live on REDIS_URL and answer."""
    app = make_app(REDIS_CLUSTER_NODES=[("127.0.0.1", refused_port)])
    with app.app_context():
        rq_connection().rpush(Queue.redis_queue_namespace_prefix + "default", "job")
    result = app.test_cli_runner().invoke(args=["status", "--json"])
    facts = json.loads(result.output)
    assert result.exit_code == 1 and facts["down"] == ["cluster"]
    assert facts["queues"]["default"]["waiting"] == 1
