"""A keyed events request that failed part way (some users' calls ran, one failed) and its
retry: each user's notification is written once, and the retry answers the ids the first
try made. On one Redis and on a Redis Cluster, where a batch's users live on several masters
and one of them failing over fails a part of the request."""

import json

import pytest

from tests.hub import make_user
from webapp import keys
from webapp.extensions import get_redis
from webapp.inbox import service as inbox


@pytest.fixture(params=["one Redis", "cluster"])
def hub_app(request, make_app):
    if request.param == "cluster":
        return request.getfixturevalue("make_cluster_app")()
    return make_app()


def post(app, token, key, uids):
    body = [{"type": "ORDER_EXECUTED", "user_id": uid, "title": f"Filled for {uid}"}
            for uid in uids]
    return app.test_client().post(
        "/api/v1/events", data=json.dumps(body), content_type="application/json",
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key})


def inbox_ids(app, uid):
    with app.app_context():
        return [n["id"] for n in inbox.list_page(uid, limit=100)[0]]


def test_a_retry_after_a_partial_failure_writes_each_user_once(hub_app):
    app = hub_app
    token = app.test_cli_runner().invoke(args=["tokens", "create", "o"]).output.split()[-1]
    done, failing = make_user(app, "done@example.com"), make_user(app, "fails@example.com")
    with app.app_context():
        get_redis().set(keys.replay(failing), "in the way")  # that user's call fails
    first = post(app, token, "fill-1", [done, failing])
    assert first.status_code >= 500
    written = inbox_ids(app, done)
    assert len(written) == 1
    with app.app_context():
        get_redis().delete(keys.replay(failing))
    retry = post(app, token, "fill-1", [done, failing])
    assert retry.status_code == 202 and "Idempotent-Replayed" not in retry.headers
    assert inbox_ids(app, done) == written  # not written again
    assert retry.json["ids"] == written + inbox_ids(app, failing)
    again = post(app, token, "fill-1", [done, failing])
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json["ids"] == retry.json["ids"]


def test_the_same_key_with_other_content_after_a_failure_is_refused(hub_app):
    app = hub_app
    token = app.test_cli_runner().invoke(args=["tokens", "create", "o"]).output.split()[-1]
    uid = make_user(app, "one@example.com")
    with app.app_context():
        get_redis().set(keys.replay(uid), "in the way")
    assert post(app, token, "fill-2", [uid]).status_code >= 500
    with app.app_context():
        get_redis().delete(keys.replay(uid))
    other = post(app, token, "fill-2", [uid, uid])
    assert other.status_code == 422 and other.json["error"] == "idempotency_key_reused"
    assert inbox_ids(app, uid) == []


def test_a_retry_whose_recipients_changed_writes_the_changed_part_as_new(hub_app):
    """A strategy's followers are read again on the retry: a user who followed it meanwhile
    gets a part of another size, written as new, not an error on every retry."""
    from webapp.preferences import service as preferences

    app = hub_app
    token = app.test_cli_runner().invoke(args=["tokens", "create", "o"]).output.split()[-1]
    joins, failing = make_user(app, "joins@example.com"), make_user(app, "f@example.com")
    with app.app_context():
        preferences.follow(failing, "grid-1")
        get_redis().set(keys.replay(failing), "in the way")
    body = [{"type": "ORDER_EXECUTED", "target": "strategy:grid-1", "title": "Grid filled"},
            {"type": "ORDER_EXECUTED", "user_id": joins, "title": "Filled"}]

    def send():
        return app.test_client().post(
            "/api/v1/events", data=json.dumps(body), content_type="application/json",
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "grid-fill"})

    assert send().status_code >= 500
    assert len(inbox_ids(app, joins)) == 1
    with app.app_context():
        get_redis().delete(keys.replay(failing))
        preferences.follow(joins, "grid-1")
    retry = send()
    assert retry.status_code == 202
    assert len(inbox_ids(app, joins)) == 3 and len(inbox_ids(app, failing)) == 1
    assert set(retry.json["ids"]) <= set(inbox_ids(app, joins) + inbox_ids(app, failing))
