"""Symbols are checked against Binance's list of trading symbols (exchangeInfo, served by the
fake feed on loopback): unknown ones are refused with close matches; without a list, alerts
are accepted as unverified and judged once the list arrives."""

import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from rq_scheduler import Scheduler

from devtools.fakefeed import FakeFeed
from devtools.fakefeed_demo import DEMO_MARKETS
from devtools.launch import demo_env
from tests.conftest import csrf_token
from tests.hub import run_jobs
from webapp.alerts import service as alerts
from webapp.core.queues import rq_connection
from webapp.extensions import db, get_redis
from webapp.market import symbols
from webapp.models import Alert
from worker.schedule import PERIODIC, reconcile

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS


@pytest.fixture
def feed():
    with FakeFeed() as f:
        yield f


@pytest.fixture
def app(make_app, feed):
    return make_app(BINANCE_API_URL=feed.api_url)


@pytest.fixture
def key(auth):
    auth.create()
    auth.login()
    return {"X-API-Key": auth.api_key()}


def now_ms():
    return int(time.time() * 1000)


def post(client, key, symbol):
    return client.post("/api/v1/alerts", json={"symbol": symbol, "type": "above", "price": 5},
                       headers=key)


def listed(client, key):
    return {a["symbol"]: a for a in client.get("/api/v1/alerts", headers=key).get_json()}


def count_alerts(app):
    with app.app_context():
        return db.session.scalar(db.select(db.func.count(Alert.id)))


def test_refresh_asks_binance_for_trading_spot_symbols_only(app, feed):
    with app.app_context():
        assert symbols.refresh_due() == 14  # the fake lists 15, one of them in BREAK
        found = symbols.verdicts(["BTCUSDT", "BTCBUSD", "FOOBARUSDT"])
    assert found == {"BTCUSDT": "listed", "BTCBUSD": "unlisted", "FOOBARUSDT": "unlisted"}
    [path] = feed.api_requests
    assert urlsplit(path).path == "/api/v3/exchangeInfo"
    assert parse_qs(urlsplit(path).query) == {
        "permissions": ["SPOT"], "symbolStatus": ["TRADING"], "showPermissionSets": ["false"]}


@pytest.mark.parametrize("symbol, says", [
    ("FOOBARUSDT", "FOOBARUSDT is not trading on Binance (spot): check the spelling"),
    ("ETHUSTD", "ETHUSTD is not trading on Binance. Close matches: ETHUSDT, ETHUSDC"),
    ("BTCBUSD", "BTCBUSD is not"),  # listed, but not trading
])
def test_the_api_refuses_a_symbol_binance_does_not_trade(app, client, key, symbol, says):
    with app.app_context():
        symbols.refresh()
    response = post(client, key, symbol)
    assert response.status_code == 422
    assert response.get_json()["detail"]["symbol"].startswith(says)
    assert count_alerts(app) == 0
    assert post(client, key, "ethusdc").status_code == 201


@pytest.mark.parametrize("htmx", [True, False])
def test_the_page_refuses_an_unknown_symbol_in_the_form(app, client, key, htmx):
    with app.app_context():
        symbols.refresh()
    headers = {"HX-Request": "true"} if htmx else {}
    form = {"symbol": "ETHUSTD", "type": "above", "price": "5",
            "csrf_token": csrf_token(client, "/alerts/")}
    response = client.post("/alerts/", headers=headers, data=form)
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Close matches: ETHUSDT, ETHUSDC" in page
    assert re.search(r'id="symbol"[^>]*aria-invalid="true"', page)
    assert count_alerts(app) == 0


@pytest.mark.both_databases
def test_without_the_list_alerts_are_accepted_unverified_and_judged_when_it_comes(
        app, client, key, feed):
    feed.api_status = 503
    with app.app_context():
        assert symbols.refresh_due() is None  # Binance answers an error: no list
    for symbol in ("FOOBARUSDT", "BTCUSDT"):
        assert post(client, key, symbol).status_code == 201
    before = listed(client, key)
    assert {s: (a["status"], a["symbol_check"]) for s, a in before.items()} == {
        "FOOBARUSDT": ("active", "unverified"), "BTCUSDT": ("active", "unverified")}
    assert client.get("/alerts/").get_data(as_text=True).count("symbol not verified yet") == 2

    feed.api_status = 200
    with app.app_context():
        assert symbols.refresh() == 14
    after = listed(client, key)
    assert (after["FOOBARUSDT"]["status"], after["FOOBARUSDT"]["symbol_check"]) == (
        "unknown_symbol", "unlisted")
    assert (after["BTCUSDT"]["status"], after["BTCUSDT"]["symbol_check"]) == ("active", "listed")
    page = client.get("/alerts/").get_data(as_text=True)
    assert "unknown symbol" in page and "FOOBARUSDT is not trading on Binance" in page
    assert "not verified" not in page
    assert post(client, key, "FOOBARUSDT").status_code == 422


def test_a_failed_fetch_keeps_the_list_and_is_not_retried_at_once(app, feed):
    with app.app_context():
        symbols.refresh(now_ms() - 2 * DAY_MS + HOUR_MS)  # a day old: due again
        feed.api_status = 500
        assert symbols.refresh_due() is None
        assert symbols.refresh_due() is None and symbols.refresh_due() is None
        assert len(feed.api_requests) == 2  # the first fetch and one attempt, no storm
        assert symbols.verdicts(["BTCUSDT", "FOOBARUSDT"]) == {
            "BTCUSDT": "listed", "FOOBARUSDT": "unlisted"}


def test_when_binance_says_slow_down_no_fetch_until_it_said(app, feed):
    feed.api_status, feed.api_headers = 429, {"Retry-After": "900"}
    with app.app_context():
        assert symbols.refresh_due() is None
        assert 60 < get_redis().ttl(symbols.HOLD) <= 900
        assert symbols.refresh_due() is None
    assert len(feed.api_requests) == 1


def test_an_unreachable_binance_leaves_symbols_unverified(make_app, refused_port):
    app = make_app(BINANCE_API_URL=f"http://127.0.0.1:{refused_port}")  # nothing listens
    with app.app_context():
        assert symbols.refresh_due() is None
        assert symbols.verdicts(["FOOBARUSDT"]) == {"FOOBARUSDT": "unverified"}
        assert symbols.refusal("FOOBARUSDT") is None


def test_a_list_two_days_old_no_longer_refuses(app, client, key, feed):
    with app.app_context():
        symbols.refresh(now_ms() - 2 * DAY_MS - HOUR_MS)
        assert symbols.verdicts(["FOOBARUSDT", "BTCUSDT"]) == {
            "FOOBARUSDT": "unverified", "BTCUSDT": "listed"}
    assert post(client, key, "FOOBARUSDT").status_code == 201
    with app.app_context():
        assert symbols.refresh_due() == 14  # and the next check fetches a fresh one
    assert listed(client, key)["FOOBARUSDT"]["status"] == "unknown_symbol"


def test_a_miss_on_an_hour_old_list_fetches_a_new_listing_at_the_next_check(
        app, client, key, feed):
    with app.app_context():
        symbols.refresh(now_ms() - 2 * HOUR_MS)
        assert symbols.refresh_due() is None  # two hours old: not due
    feed.listing["NEWUSDT"] = "TRADING"  # listed since
    assert post(client, key, "NEWUSDT").status_code == 422
    with app.app_context():
        assert symbols.refresh_due() == 15
    assert len(feed.api_requests) == 2
    assert post(client, key, "NEWUSDT").status_code == 201


def test_a_list_from_another_binance_api_url_is_no_list(make_app, feed):
    demo = make_app(BINANCE_API_URL=feed.api_url)
    with demo.app_context():
        symbols.refresh()
    real = make_app(BINANCE_API_URL="http://127.0.0.1:9")  # same Redis, another source
    with real.app_context():
        assert symbols.verdicts(["XYZUSDT"]) == {"XYZUSDT": "unverified"}
        assert symbols.suggestions("BTC") == []
    with demo.app_context():
        assert symbols.verdicts(["XYZUSDT"]) == {"XYZUSDT": "unlisted"}


def test_tests_accept_any_symbol_unless_they_store_a_list(make_app):
    app = make_app()
    assert app.config["BINANCE_API_URL"] == ""
    with app.app_context():
        assert symbols.refresh_due() is None
        assert symbols.verdicts(["FOOBARUSDT"]) == {"FOOBARUSDT": "unverified"}
        symbols.store(["BTCUSDT"])
        assert symbols.verdicts(["FOOBARUSDT"]) == {"FOOBARUSDT": "unlisted"}


@pytest.mark.parametrize("active, fired, check, expected", [
    (True, False, "unlisted", "unknown_symbol"),
    (False, False, "unlisted", "unknown_symbol"),  # paused: resuming would not help
    (False, True, "unlisted", "fired"),  # it did fire before Binance stopped trading it
    (True, False, "unverified", "active"),
    (False, False, "listed", "paused"),
])
def test_status_says_an_unknown_symbol_cannot_fire(active, fired, check, expected):
    alert = Alert(active=active, mode="once", expires_at=None,
                  last_fired_at=alerts.utcnow() if fired else None)
    assert alerts.status(alert, check=check) == expected


def test_suggestions_start_with_what_was_typed_popular_quotes_first(app, client, key):
    with app.app_context():
        symbols.store(["ETHBTC", "ETHFIUSDT", "ETHUSDC", "ETHUSDT", "BTCUSDT", "ETHEUR"])

    def options(typed):
        page = client.get("/alerts/symbols", query_string={"symbol": typed})
        assert page.status_code == 200
        return re.findall(r'<option value="(\w+)">', page.get_data(as_text=True))

    assert options("eth") == ["ETHUSDT", "ETHUSDC", "ETHBTC", "ETHFIUSDT", "ETHEUR"]
    assert options("BTCU") == ["BTCUSDT"]
    assert options("") == options("E T") == options("X") == []
    form = client.get("/alerts/").get_data(as_text=True)
    assert re.search(r'<input id="symbol"[^>]*list="symbol-options"[^>]*hx-get="/alerts/symbols"',
                     form)
    assert '<datalist id="symbol-options"></datalist>' in form


def test_suggestions_need_a_login(app, client):
    response = client.get("/alerts/symbols?symbol=BTC")
    assert response.status_code == 302 and response.location.startswith("/auth/login")
    response = client.get("/alerts/symbols?symbol=BTC", headers={"HX-Request": "true"})
    assert response.status_code == 401  # htmx would swap a login page into the datalist
    assert response.headers["HX-Redirect"].startswith("/auth/login")


def test_the_scheduler_fetches_the_list_through_a_worker(app, feed):
    assert any(p.id == "symbols-refresh" and p.func == "webapp.market.symbols.refresh_due"
               for p in PERIODIC)
    with app.app_context():
        scheduler = Scheduler(queue_name="default", connection=rq_connection())
        reconcile(scheduler)
        scheduler.enqueue_jobs()  # every periodic job is due at once on a first start
    run_jobs(app)
    with app.app_context():
        assert symbols.verdicts(["SOLUSDT"]) == {"SOLUSDT": "listed"}


def test_make_demo_lists_the_demo_markets_from_the_fake_feed(make_app):
    with FakeFeed(demo=True) as feed:
        env = demo_env({}, feed.port)
        assert env["BINANCE_WS_URL"] == feed.url
        app = make_app(BINANCE_API_URL=env["BINANCE_API_URL"])
        with app.app_context():
            assert symbols.refresh_due() == 14
            found = symbols.verdicts(DEMO_MARKETS)
    assert set(found.values()) == {"listed"}
