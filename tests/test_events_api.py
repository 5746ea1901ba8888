"""POST /api/v1/events with service tokens: batches, bad items, idempotency, channels."""

import io
import json
import re

import pytest

from tests.conftest import csrf_token
from tests.hub import make_user, run_jobs
from webapp import keys
from webapp.extensions import db, get_redis
from webapp.inbox import service as inbox
from webapp.models import CriticalNotification, StrategyFollow, User
from webapp.notify import intake as events
from webapp.notify import slowsteps

pytestmark = pytest.mark.both_databases


def post(client, token, body, key=None, header="Authorization"):
    headers = {header: f"Bearer {token}" if header == "Authorization" else token}
    if key:
        headers["Idempotency-Key"] = key
    return client.post("/api/v1/events", data=json.dumps(body), headers=headers,
                       content_type="application/json")


def event(uid, **extra):
    return {"type": "ORDER_EXECUTED", "user_id": uid, "title": "Bought 0.5 BTC",
            "message": "Filled at 65000", "data": {"order": 7}, **extra}


def inbox_of(app, uid):
    with app.app_context():
        return inbox.list_page(uid, limit=100)[0]


def test_single_event_lands_in_the_inbox(app, client, token):
    uid = make_user(app, "a@example.com")
    response = post(client, token, event(uid, order_id="o-7"), header="X-Service-Token")
    assert response.status_code == 202
    [nid] = response.json["ids"]
    [stored] = inbox_of(app, uid)
    assert stored["id"] == nid and stored["title"] == "Bought 0.5 BTC"
    assert stored["order_id"] == "o-7" and stored["priority"] == "normal"
    assert stored["data"] == {"order": 7}


def test_batch_with_bad_items_routes_the_good_ones_and_says_which(app, client, token):
    uid = make_user(app, "b@example.com")
    batch = [event(uid), {"type": "NOPE", "user_id": uid, "title": "x"}, event(9999),
             event(uid, priority="urgent", title=""), event(uid, title="second")]
    response = post(client, token, batch)
    assert response.status_code == 422
    body = response.json
    assert (body["accepted"], body["rejected"]) == (2, 3)
    assert "the other 2 were accepted" in body["detail"]
    statuses = [r["status"] for r in body["results"]]
    assert statuses == ["accepted", "rejected", "rejected", "rejected", "accepted"]
    assert "type" in body["results"][1]["errors"]
    assert body["results"][2]["errors"] == {"user_id": "No such user."}
    assert set(body["results"][3]["errors"]) == {"priority", "title"}
    assert len(inbox_of(app, uid)) == 2 and len(body["ids"]) == 2


def test_retried_request_with_the_same_key_never_duplicates(app, client, token):
    uid = make_user(app, "c@example.com")
    batch = {"events": [event(uid, title=f"fill {i}") for i in range(3)]}
    first = post(client, token, batch, key="retry-me-1")
    again = post(client, token, batch, key="retry-me-1")
    assert first.status_code == again.status_code == 202
    assert again.json["ids"] == first.json["ids"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(inbox_of(app, uid)) == 3
    other_body = post(client, token, event(uid), key="retry-me-1")
    assert other_body.status_code == 422
    assert other_body.json["error"] == "idempotency_key_reused"
    assert post(client, token, batch, key="retry-me-2").status_code == 202
    assert len(inbox_of(app, uid)) == 6


def test_batch_limit_and_bad_json(app, client, token):
    uid = make_user(app, "d@example.com")
    too_many = post(client, token, [event(uid)] * 1001)
    assert too_many.status_code == 422 and "at most 1000" in too_many.json["detail"]
    broken = client.post("/api/v1/events", data="{nope", headers={
        "Authorization": f"Bearer {token}"}, content_type="application/json")
    assert broken.status_code == 422 and broken.json["error"] == "invalid_input"
    assert inbox_of(app, uid) == []


def test_a_full_batch_of_1000_is_accepted(app, client, token):
    uid = make_user(app, "e@example.com")
    response = post(client, token, [event(uid, title=f"n{i}") for i in range(1000)])
    assert response.status_code == 202 and len(response.json["ids"]) == 1000


def test_service_tokens_publish_only_and_users_cannot_publish(app, client, auth, token):
    uid = auth.create()
    key = auth.api_key()
    assert post(client, "wrong", event(uid)).status_code == 401
    assert post(client, key, event(uid)).status_code == 401
    for path in ("/api/v1/me", "/api/v1/notifications", "/api/v1/audit"):
        assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 401
        assert client.get(path, headers={"X-Service-Token": token}).status_code == 401


def test_revoked_token_is_refused(app, client, runner, token):
    uid = make_user(app, "f@example.com")
    assert runner.invoke(args=["tokens", "revoke", "order-system"]).exit_code == 0
    assert post(client, token, event(uid)).status_code == 401


def test_strategy_events_reach_its_followers_only(app, client, token):
    ann, bob, cy = (make_user(app, f"{n}@example.com") for n in ("ann", "bob", "cy"))
    with app.app_context():
        db.session.add_all([StrategyFollow(user_id=ann, strategy_id="momo"),
                            StrategyFollow(user_id=bob, strategy_id="momo")])
        db.session.commit()
    response = post(client, token, {"type": "STRATEGY_STATUS", "strategy_id": "momo",
                                    "title": "momo paused"})
    assert response.status_code == 202 and len(response.json["ids"]) == 2
    assert [n["strategy_id"] for n in inbox_of(app, ann)] == ["momo"]
    assert len(inbox_of(app, bob)) == 1 and inbox_of(app, cy) == []


def test_system_broadcast_reaches_every_connected_user(app, client, token):
    users = [make_user(app, f"u{i}@example.com") for i in range(3)]
    with app.app_context():
        pubsub = get_redis().pubsub()
    pubsub.subscribe(*[keys.user_channel(uid) for uid in users])
    for _ in users:
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    response = post(client, token, {"type": "SYSTEM_MAINTENANCE", "target": "system",
                                    "title": "Maintenance at 02:00 UTC"})
    assert response.status_code == 202 and len(response.json["ids"]) == 3
    got = {}
    for _ in users:
        message = pubsub.get_message(timeout=5)
        got[message["channel"]] = json.loads(message["data"])["data"]["title"]
    pubsub.close()
    assert got == {keys.user_channel(uid): "Maintenance at 02:00 UTC" for uid in users}
    run_jobs(app)
    with app.app_context():  # critical: every user has it in the audit trail too
        rows = db.session.scalars(db.select(CriticalNotification.user_id)).all()
    assert sorted(rows) == users


def test_cli_notify_user_and_system(app, runner):
    uid = make_user(app, "ops@example.com")
    make_user(app, "other@example.com")
    result = runner.invoke(args=["notify", "ops@example.com", "REGULATORY_NOTICE", "KYC",
                                 "Please update your documents"])
    assert result.exit_code == 0, result.output
    assert [n["type"] for n in inbox_of(app, uid)] == ["REGULATORY_NOTICE"]
    # its slow steps and deliveries run, and log, under the request id it printed
    request_id = result.output.split("(request id ")[1].rstrip(")\n")
    with app.app_context():
        routed = [f for name in slowsteps.QUEUES
                  for _, f in get_redis().xrange(keys.routed(name))]
    assert request_id.startswith("cli-") and [f["request_id"] for f in routed] == [request_id]
    result = runner.invoke(args=["notify", "--system", "SYSTEM_MAINTENANCE", "Down", "Soon"])
    assert result.exit_code == 0 and "sent 2 notification(s)" in result.output
    bad = runner.invoke(args=["notify", "ops@example.com", "NOPE", "t", "m"])
    assert bad.exit_code != 0 and "type" in bad.output


def test_admin_broadcast_page(app, client, auth):
    make_user(app, "reader@example.com")
    auth.create()
    auth.login()
    assert client.get("/admin/broadcast").status_code == 404  # not an admin
    with app.app_context():
        db.session.execute(db.update(User).values(is_admin=True))
        db.session.commit()
    token = csrf_token(client, "/admin/broadcast")
    bad = client.post("/admin/broadcast", data={"type": "SYSTEM_MAINTENANCE", "title": "",
                                                "csrf_token": token})
    assert bad.status_code == 422 and b"Required" in bad.data
    assert b'id="title-error"' in bad.data and b'aria-describedby="title-error"' in bad.data
    odd = client.post("/admin/broadcast", data={"type": "SYSTEM_MAINTENANCE", "title": "Up",
                                                "priority": "urgent", "csrf_token": token})
    assert odd.status_code == 422 and b'id="priority-error"' in odd.data  # said, not hidden
    sent = client.post("/admin/broadcast", data={
        "type": "SYSTEM_MAINTENANCE", "title": "Upgrade tonight", "message": "02:00 UTC",
        "csrf_token": token}, follow_redirects=True)
    assert b"Sent to 2 users." in sent.data


def test_odd_items_are_per_item_reasons_and_nothing_is_half_written(app, client, token):
    uid = make_user(app, "odd@example.com")
    odd = [event(uid, title="   "), event(uid, title="\t\n"), event(uid, type=[]),
           event(uid, type={"a": 1}), event(uid, priority=["high"]), event(uid, order_id={}),
           event(uid, target=[1]), event(uid, user_id="9" * 30), event(uid, user_id=10**30),
           event(uid, user_id="\u00b2"), event(uid, user_id="\u0661"), event(uid, data=[1]),
           event(uid, priority=[]), event(uid, priority=0), event(uid, priority=False),
           event(uid, data=""), event(uid, data=[]), event(uid, data=False)]
    batch = [event(uid, title="first", message="   ")] + odd + [event(uid, title="last")]
    response = post(client, token, batch, key="odd-batch")
    assert response.status_code == 422, response.json
    body = response.json
    assert (body["accepted"], body["rejected"]) == (2, len(odd))
    reasons = [set(r["errors"]) for r in body["results"][1:-1]]
    assert reasons == [{"title"}, {"title"}, {"type"}, {"type"}, {"priority"}, {"order_id"},
                       {"target"}, {"user_id"}, {"user_id"}, {"user_id"}, {"user_id"}, {"data"},
                       {"priority"}, {"priority"}, {"priority"}, {"data"}, {"data"}, {"data"}]
    assert [n["title"] for n in inbox_of(app, uid)] == ["last", "first"]
    assert inbox_of(app, uid)[1]["message"] == ""
    again = post(client, token, batch, key="odd-batch")
    assert again.json["ids"] == body["ids"] and len(inbox_of(app, uid)) == 2


@pytest.mark.parametrize("targets", [
    {"channel": "system"}, {"target": "system"}, {"target": "user:{other}"},
    {"channel": "strategy:momo"}, {"target": "system", "channel": "system", "user_id": None},
    {"strategy_id": "momo", "target": "system", "user_id": None},
    {"strategy_id": "momo", "user_id": "system"}, {"target": 0}, {"channel": False},
])
def test_an_event_naming_two_targets_is_refused_and_reaches_nobody(app, client, token,
                                                                     targets):
    """Which target was meant is a guess; a wrong one sends the event to other users."""
    uid, other = make_user(app, "one@example.com"), make_user(app, "two@example.com")
    with app.app_context():
        db.session.add(StrategyFollow(user_id=other, strategy_id="momo"))
        db.session.commit()
    fields = {name: value.format(other=other) if isinstance(value, str) else value
              for name, value in targets.items()}
    response = post(client, token, event(uid, **fields))
    assert response.status_code == 422, response.json
    assert set(response.json["results"][0]["errors"]) == {"target"}
    assert inbox_of(app, uid) == [] and inbox_of(app, other) == []
    kept = post(client, token, event(uid, strategy_id="momo"))  # a reference beside user_id
    assert kept.status_code == 202
    assert [n["strategy_id"] for n in inbox_of(app, uid)] == ["momo"]
    assert inbox_of(app, other) == []


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinity_are_refused_as_invalid_json(app, client, token, number):
    uid = make_user(app, "nan@example.com")
    raw = json.dumps(event(uid)).replace('"order": 7', f'"order": {number}')
    response = client.post("/api/v1/events", data=raw, content_type="application/json",
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 422 and response.json["error"] == "invalid_input"
    assert inbox_of(app, uid) == []


def test_blank_titles_are_refused_by_cli_and_admin_broadcast(app, client, runner, auth):
    uid = make_user(app, "blank@example.com")
    bad = runner.invoke(args=["notify", "blank@example.com", "ORDER_EXECUTED", "   ", "m"])
    assert bad.exit_code != 0 and "title" in bad.output
    auth.create()
    auth.login()
    with app.app_context():
        db.session.execute(db.update(User).values(is_admin=True))
        db.session.commit()
    token = csrf_token(client, "/admin/broadcast")
    blank = client.post("/admin/broadcast", data={"type": "SYSTEM_MAINTENANCE", "title": "  ",
                                                  "csrf_token": token})
    assert blank.status_code == 422 and b"Required" in blank.data
    # the field in error takes focus when the form comes back, as every other form's does
    assert re.search(rb'<input id="title"[^>]*aria-invalid="true"[^>]*autofocus', blank.data)
    assert blank.data.count(b"autofocus") == 1
    assert inbox_of(app, uid) == []


def test_a_full_batch_of_large_legal_events_fits_the_body_limit(app, client, token):
    """1000 events each near its field limits (about 13 MB) are taken, not refused 413."""
    uid = make_user(app, "big@example.com")
    big = event(uid, title="é" * events.TITLE_MAX, message="€" * events.MESSAGE_MAX,
                data={"blob": "x" * (events.DATA_MAX - 20)})
    body = json.dumps([big] * 1000, ensure_ascii=False).encode()
    assert 2 * 1024 * 1024 < len(body) < events.MAX_BODY
    response = client.post("/api/v1/events", data=body, content_type="application/json",
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 202, response.json
    too_big = client.post("/api/v1/events", data=b" " * (events.MAX_BODY + 1),
                          content_type="application/json",
                          headers={"Authorization": f"Bearer {token}"})
    assert too_big.status_code == 413 and too_big.is_json
    # without a length (chunked), as well: not cut at the limit and read as broken JSON
    chunked = client.post("/api/v1/events", input_stream=io.BytesIO(b" " * events.MAX_BODY + body),
                          content_type="application/json",
                          headers={"Authorization": f"Bearer {token}",
                                   "Transfer-Encoding": "chunked"},
                          environ_overrides={"wsgi.input_terminated": True})  # as gunicorn's
    assert chunked.status_code == 413 and chunked.is_json


def test_a_retry_with_the_same_content_in_another_key_order_is_the_same_request(
        app, client, token):
    uid = make_user(app, "order@example.com")
    first = {"type": "ORDER_EXECUTED", "user_id": uid, "title": "t", "data": {"a": 1, "b": 2}}
    shuffled = '{"data": {"b": 2, "a": 1}, "title": "t", "user_id": %d,  "type": "ORDER_EXECUTED"}'
    one = post(client, token, first, key="order-key")
    two = client.post("/api/v1/events", data=shuffled % uid, content_type="application/json",
                      headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "order-key"})
    assert one.status_code == two.status_code == 202
    assert two.headers["Idempotent-Replayed"] == "true" and len(inbox_of(app, uid)) == 1


@pytest.mark.parametrize("field", ["title", "message", "data"])
def test_a_lone_surrogate_anywhere_is_a_clean_422(app, client, token, field):
    uid = make_user(app, "surrogate@example.com")
    body = json.dumps(event(uid)).replace('"Bought 0.5 BTC"' if field == "title" else
                                          '"Filled at 65000"' if field == "message" else
                                          '{"order": 7}', '"\\udc00"' if field != "data"
                                          else '{"note": "\\udc00"}')
    response = client.post("/api/v1/events", data=body, content_type="application/json",
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 422 and "surrogate" in response.json["detail"]
    assert inbox_of(app, uid) == []


def test_an_alert_id_that_can_name_no_alert_is_kept_as_the_senders_reference(app, client,
                                                                             token):
    """Too large for a row id, or digits of another script: stored as sent, and the slow
    steps (audit, deliveries) and the API read it as no alert of ours, never fail on it."""
    uid = make_user(app, "ref@example.com")
    refs = [2**63, 10**30, "99999999999999999999", "²", "0"]
    response = post(client, token, [event(uid, type="SYSTEM_MAINTENANCE", alert_id=ref)
                                    for ref in refs])
    assert response.status_code == 202, response.json
    run_jobs(app)
    with app.app_context():
        audited = db.session.scalars(db.select(CriticalNotification.id)).all()
        items = [inbox.to_api(n) for n in inbox.list_page(uid, limit=100)[0]]
    assert sorted(audited) == sorted(response.json["ids"])
    assert [item["alert_id"] for item in items] == [None] * len(refs)


@pytest.mark.both_databases
def test_control_characters_are_refused_in_the_text_and_nothing_is_written(app, client, token):
    """PostgreSQL refuses a NUL in a text column: accepted, such an event would never reach
    the audit trail or its deliveries. Tabs and line breaks in a message are text."""
    uid = make_user(app, "control@example.com")
    bad = [event(uid, title="a\u0000b"), event(uid, message="m\u0000"),
           event(uid, title="\u001b[31mred"), event(uid, message="bell\u0007")]
    good = event(uid, type="SYSTEM_MAINTENANCE", message="line one\n\tline two\r\n")
    response = post(client, token, [*bad, good])
    assert response.status_code == 422
    assert [r["status"] for r in response.json["results"]] == ["rejected"] * 4 + ["accepted"]
    assert "control characters" in response.json["results"][0]["errors"]["title"]
    run_jobs(app)
    with app.app_context():
        audited = db.session.scalars(db.select(CriticalNotification.message)).all()
    assert audited == ["line one\n\tline two\r\n"] and len(inbox_of(app, uid)) == 1
