"""The audit trail: critical notifications in SQL, listed by page and API, kept until expiry."""

from datetime import UTC, datetime, timedelta

import pytest

from tests.hub import make_user, run_jobs
from webapp import keys
from webapp.extensions import db, get_redis
from webapp.inbox import service as inbox
from webapp.models import CriticalNotification
from webapp.notify import router
from worker import jobs

pytestmark = pytest.mark.both_databases


def critical(app, uid, title, **extra):
    with app.app_context():
        return router.route({"user_id": uid, "type": "REGULATORY_NOTICE", "title": title,
                             **extra})[0]


def test_api_and_page_list_only_the_callers_critical_notifications(app, client, auth):
    uid = auth.create()
    other = make_user(app, "other@example.com")
    critical(app, uid, "New KYC rules")
    critical(app, other, "Not yours")
    with app.app_context():
        router.route({"user_id": uid, "type": "PRICE_ALERT", "title": "not critical"})
    key = auth.api_key()  # raises a critical ACCOUNT_SECURITY notification too
    run_jobs(app)
    body = client.get("/api/v1/audit", headers={"X-API-Key": key}).json
    titles = [item["title"] for item in body["items"]]
    assert titles == ["API key created: test", "New KYC rules"]
    assert body["items"][1]["expires_at"] > body["items"][1]["created_at"]
    auth.login()
    page = client.get("/audit").get_data(as_text=True)
    assert "New KYC rules" in page and "Not yours" not in page
    for limit in ("x", "0", "-1", "201", "9" * 54, "\u0665", "1_0"):  # int() takes the last two
        assert client.get(f"/api/v1/audit?limit={limit}").status_code == 422, limit
    assert client.get("/api/v1/audit?limit=200").status_code == 200


def test_deleting_from_the_inbox_keeps_the_audit_row(app):
    uid = make_user(app, "a@example.com")
    nid = critical(app, uid, "Trading halt")
    with app.app_context():
        inbox.delete(uid, nid)
    run_jobs(app)  # the slow step runs after the user deleted it
    with app.app_context():
        assert db.session.get(CriticalNotification, nid).title == "Trading halt"


def test_cleanup_never_removes_before_expiry(app):
    uid = make_user(app, "b@example.com")
    nid = critical(app, uid, "Keep me")
    run_jobs(app)
    with app.app_context():
        expires = db.session.get(CriticalNotification, nid).expires_at
        assert jobs.prune_sql(now=expires - timedelta(seconds=1))["audit"] == 0
        assert db.session.get(CriticalNotification, nid) is not None
        assert jobs.prune_sql(now=expires + timedelta(seconds=1))["audit"] == 1


def test_cleanup_drops_expired_inbox_entries_and_their_read_marks(app):
    uid = make_user(app, "c@example.com")
    old = int((datetime.now(UTC) - timedelta(days=8)).timestamp() * 1000)
    with app.app_context():
        r = get_redis()
        r.xadd(keys.replay(uid), {"event": "notification", "data": "{}"}, id=f"{old}-0")
        r.zadd(keys.read(uid), {f"{old}-0": old})
        r.xadd(keys.replay(uid), {"event": "notification", "data": "{}"})
        assert jobs.cleanup()["redis_entries"] == 1
        assert r.xlen(keys.replay(uid)) == 1 and not r.exists(keys.read(uid))
        assert inbox.unread_count(uid) == 1


def test_out_of_range_before_is_refused_not_a_server_error(app, client, auth):
    auth.create()
    key = auth.api_key()
    auth.login()
    for before in ("100000000000000000", "9" * 30, "-5", "1e17", "\u0661\u0662"):
        response = client.get(f"/api/v1/audit?before={before}", headers={"X-API-Key": key})
        assert response.status_code == 422, before
        assert "before" in response.json["detail"], before
        assert client.get(f"/audit?before={before}").status_code == 400, before
    assert client.get("/audit?before=253402300799999").status_code == 200


def _all_pages(client, key, limit):
    seen, before = [], ""
    while True:
        body = client.get(f"/api/v1/audit?limit={limit}&before={before}",
                          headers={"X-API-Key": key}).json
        seen += [item["title"] for item in body["items"]]
        if body["next_before"] is None:
            return seen
        before = body["next_before"]


@pytest.mark.parametrize("limit", [5, 7, 50])
def test_paging_through_a_batch_that_shares_a_millisecond_shows_each_row_once(
        app, client, auth, limit):
    """A batch of events is stored in one millisecond: a cursor of milliseconds cut inside
    it, and the page after it began past the rest of the batch."""
    uid = auth.create()
    key = auth.api_key()
    at = datetime(2026, 12, 6, 1, 2, 3, 317_000)
    with app.app_context():
        rows = [CriticalNotification(
            id=f"{at.timestamp():.0f}-{i}-{uid}", user_id=uid, type="RISK_VIOLATION",
            priority="critical", title=f"R{i}", message="m", data={},
            created_at=at - timedelta(milliseconds=0 if i < 12 else i),
            expires_at=at + timedelta(days=365)) for i in range(20)]
        db.session.add_all(rows)
        db.session.commit()
    titles = [t for t in _all_pages(client, key, limit) if t.startswith("R")]
    assert sorted(titles) == sorted(f"R{i}" for i in range(20))
    assert titles[12:] == [f"R{i}" for i in range(12, 20)]  # newest first
