"""The dashboard and inbox pages: the same partials for full pages, htmx swaps and SSE."""

import json
import re

import pytest

from devtools import redisd
from tests.conftest import csrf_token
from webapp import create_app, keys
from webapp.alerts import service as alerts
from webapp.extensions import db, get_redis
from webapp.inbox import service as inbox

HTMX = {"HX-Request": "true"}


@pytest.fixture
def user(client, app, auth):
    uid = auth.create()
    auth.login()
    with app.app_context():
        r = get_redis()
        r.delete(keys.replay(uid), keys.read(uid), keys.readmark(uid))
    return uid


def store(app, uid, title="BTCUSDT above 65000", ntype="PRICE_ALERT", now_ms=None):
    with app.app_context():
        return inbox.store({"user_id": uid, "type": ntype, "title": title,
                            "message": "traded <b>high</b>"}, now_ms=now_ms)


def post(client, path, headers=None):
    token = csrf_token(client, "/dashboard")
    return client.post(path, headers={"X-CSRFToken": token, **(headers or {})})


def test_dashboard_renders_the_feed_escaped_with_stream_and_badge(client, app, user):
    nid, eid = store(app, user, title="<img src=x onerror=alert(1)>")
    page = client.get("/dashboard").get_data(as_text=True)
    assert f'id="n-{nid}"' in page and "&lt;img src=x" in page and "<img src=x" not in page
    assert "traded &lt;b&gt;high&lt;/b&gt;" in page
    assert f'sse-connect="/stream?last_event_id={eid}"' in page
    assert re.search(r'id="unread-badge"[^>]*data-count="1"', page)
    assert 'sse-swap="notification"' in page and 'sse-swap="toast"' in page


def test_dashboard_shows_watched_symbols_with_a_sparkline(client, app, user):
    with app.app_context():
        alerts.create_alert(user, {"symbol": "BTCUSDT", "type": "above", "price": 99000})
        r = get_redis()
        r.hset(keys.price("BTCUSDT"), mapping={"price": "65010.5", "ts": 3000})
        r.rpush(keys.spark("BTCUSDT"), "[1000,65000]", "[2000,65020]", "[3000,65010.5]")
    page = client.get("/dashboard").get_data(as_text=True)
    ticker = re.search(r'<li class="ticker" id="ticker-BTCUSDT".*?</li>', page, re.S).group(0)
    assert "65010.5" in ticker
    assert '<polyline points="0.0,32.0 60.0,0.0 120.0,15.2">' in ticker


def test_anonymous_pages_have_no_stream(client):
    page = client.get("/auth/login").get_data(as_text=True)
    assert "sse-connect" not in page and "unread-badge" not in page


def test_inbox_filters_by_type_and_unread(client, app, user):
    price, _ = store(app, user)
    order, _ = store(app, user, "filled", "ORDER_EXECUTED")
    with app.app_context():
        inbox.mark_read(user, order)
    page = client.get("/notifications/?type=ORDER_EXECUTED").get_data(as_text=True)
    assert f'id="n-{order}"' in page and f'id="n-{price}"' not in page
    page = client.get("/notifications/?unread=1").get_data(as_text=True)
    assert f'id="n-{price}"' in page and f'id="n-{order}"' not in page


def test_load_more_returns_the_next_page_partial(client, app, user):
    made = [store(app, user, f"n{i}", now_ms=1_900_000_000_000 + i)[0] for i in range(25)]
    page = client.get("/notifications/").get_data(as_text=True)
    assert page.count('class="note ') == 20
    more = re.search(r'hx-get="([^"]+cursor=[^"]+)"', page).group(1).replace("&amp;", "&")
    partial = client.get(more, headers=HTMX).get_data(as_text=True)
    assert "<html" not in partial
    assert re.findall(r'id="n-([\d-]+)"', partial) == made[:5][::-1]
    assert "Load more" not in partial


def test_mark_read_swaps_the_item_and_the_badge(client, app, user):
    nid, _ = store(app, user)
    store(app, user)
    response = post(client, f"/notifications/{nid}/read", HTMX)
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and "<html" not in body
    assert f'id="n-{nid}" class="note read' in body and "Mark read" not in body
    assert re.search(r'id="unread-badge"[^>]*data-count="1"[^>]*hx-swap-oob="true"', body)


def test_delete_empties_the_item_and_updates_the_badge(client, app, user):
    nid, _ = store(app, user)
    response = post(client, f"/notifications/{nid}/delete", HTMX)
    assert response.status_code == 200
    assert response.get_data(as_text=True).startswith('<span id="unread-badge"')
    with app.app_context():
        assert inbox.list_page(user) == ([], None)


def test_read_all_returns_the_list_and_a_zero_badge(client, app, user):
    ids = [store(app, user)[0] for _ in range(3)]
    body = post(client, "/notifications/read-all", HTMX).get_data(as_text=True)
    assert all(f'id="n-{nid}" class="note read' in body for nid in ids)
    assert 'data-count="0"' in body


def test_read_all_with_a_type_filter_reads_only_that_type(client, app, user):
    """The button sits above a filtered list: "all" is what the user sees. Twice in a row,
    and past one step's budget of entries (MARK_TYPE_READ goes through in steps)."""
    with app.app_context():
        inbox.mark_all_read(user)  # the mark: the entries after it are gone through
    with app.app_context():
        inbox.store_many([{"user_id": user, "type": "ORDER_EXECUTED", "title": f"o{i}"}
                          for i in range(inbox.DEFAULT_SCAN_BUDGET + 5)])
    orders = [store(app, user, "Bought", "ORDER_EXECUTED")[0] for _ in range(3)]
    prices = [store(app, user)[0] for _ in range(2)]
    for _ in range(2):
        body = post(client, "/notifications/read-all?type=ORDER_EXECUTED", HTMX).get_data(
            as_text=True)
        assert all(f'id="n-{nid}" class="note read' in body for nid in orders)
        assert not any(f'id="n-{nid}"' in body for nid in prices)
        assert 'data-count="2"' in body
    with app.app_context():
        assert inbox.unread_count(user) == 2
        listed = inbox.list_page(user, limit=5)[0]  # the newest: 2 prices, 3 orders
    assert sorted(n["id"] for n in listed if n["status"] == "unread") == sorted(prices)
    body = post(client, "/notifications/read-all", HTMX).get_data(as_text=True)
    assert 'data-count="0"' in body


def test_read_all_with_an_unknown_type_reads_nothing(client, app, user):
    store(app, user)
    assert post(client, "/notifications/read-all?type=NOT_A_TYPE", HTMX).status_code == 400
    with app.app_context():
        assert inbox.unread_count(user) == 1


def test_without_htmx_actions_redirect_back(client, app, user):
    nid, _ = store(app, user)
    response = post(client, f"/notifications/{nid}/read")
    assert response.status_code == 302 and response.headers["Location"] == "/notifications/"


@pytest.mark.parametrize("action", ["read", "delete"])
def test_another_users_notification_is_404(client, app, user, action):
    nid, _ = store(app, user + 100)
    response = post(client, f"/notifications/{nid}/{action}", HTMX)
    # what the page's error line shows (a stale tab's item deleted in another): plain words
    assert response.status_code == 404 and "another tab" in response.json["detail"]


def test_pages_need_a_login(client):
    assert client.get("/notifications/").status_code == 302


def test_pages_answer_503_without_redis(db_url, tmp_path):
    process, url = redisd.start(tmp_path / "redis", appendonly=False)
    redisd.stop(process)  # a port where Redis was and is no more
    app = create_app({"TESTING": True, "SECRET_KEY": "t", "SQLALCHEMY_DATABASE_URI": db_url,
                      "REDIS_URL": url, "INSTANCE_PATH": str(tmp_path)})
    with app.app_context():
        db.create_all()
        from webapp.accounts import service as accounts
        uid = accounts.create_user("x@example.com", "correct horse").id
    client = app.test_client()
    with client.session_transaction() as session:  # a login's cookie; its id lives in Redis
        session["_user_id"], session["_fresh"], session["_sid"] = f"{uid}:1", True, "s"
    for path in ("/dashboard", "/notifications/"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert "sse-connect" not in response.get_data(as_text=True)
    with app.app_context():
        db.engine.dispose()


def test_toast_and_item_partials_render_the_api_item(app):
    with app.app_context():
        env = app.jinja_env
        n = inbox.to_api({"id": "9", "alert_id": "4", "type": "PRICE_ALERT",
                          "priority": "critical", "title": "<x>", "message": "", "created_at": 0,
                          "data": {"symbol": "BTCUSDT", "target": 65000, "price": 65010.5}})
        toast = env.get_template("inbox/_toast.html").render(n=n, inbox_url="/notifications/")
        assert "prio-critical" in toast and "&lt;x&gt;" in toast
        item = env.get_template("inbox/_item.html").render(n=n, inbox_url="/notifications/")
        assert 'id="n-9"' in item and 'data-symbol="BTCUSDT"' in item
        assert 'data-price="65010.5"' in item and "<x>" not in item
        assert 'hx-post="/notifications/9/read"' in item  # unread: it offers "Mark read"
    # The same item goes out as JSON (the API, /ws): JSON gives it back unchanged.
    assert json.loads(json.dumps(n)) == n


def test_read_all_under_unread_only_says_there_is_nothing_unread(client, app, user):
    store(app, user)
    body = post(client, "/notifications/read-all?unread=1", HTMX).get_data(as_text=True)
    assert 'class="note' not in body and "No unread notifications." in body
