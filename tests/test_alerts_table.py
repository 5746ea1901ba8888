"""The alerts page's live table and chart from the server's side: rows carry their levels and
distance, a row edits in place (and on a page of its own without JavaScript), Duplicate fills
the create form, the chart's data and the symbol suggestions carry prices; the dashboard's
tickers carry the 24 h change."""

import json
import re
from datetime import datetime

import pytest

from tests.conftest import csrf_token
from webapp import clock, keys
from webapp.alerts import service as alerts
from webapp.extensions import db, get_redis
from webapp.inbox import service as inbox
from webapp.market import price_history, symbols, tickers
from webapp.models import Alert, Preference

HTMX = {"HX-Request": "true"}


@pytest.fixture
def uid(auth):
    user = auth.create()
    auth.login()
    return user


def _alert(app, user, **fields):
    with app.app_context():
        return alerts.create_alert(user, {"symbol": "BTCUSDT", **fields}).id


def _price(app, symbol, price, ts=None):
    with app.app_context():
        get_redis().hset(keys.price(symbol), mapping={"price": price, "ts": ts or clock.now_ms()})


def _row(html, alert_id):
    match = re.search(rf'<tr id="alert-{alert_id}"[^>]*>', html)
    assert match, html
    return dict(re.findall(r'data-([\w-]+)="([^"]*)"', match.group(0)))


def test_rows_carry_their_levels_and_distance_for_the_live_table(client, app, uid):
    above = _alert(app, uid, type="above", price=66000, note="breakout")
    channel = _alert(app, uid, type="channel_exit", low=60000, high=64000)
    move = _alert(app, uid, type="pct_up", pct=2.5, window="1h")
    _price(app, "BTCUSDT", "65000")
    html = client.get("/alerts/").get_data(as_text=True)
    row = _row(html, above)
    assert (row["kind"], row["level"], row["last"], row["note"]) == ("above", "66000", "65000",
                                                                      "breakout")
    assert float(row["distance"]) == pytest.approx(1000 / 65000 * 100)
    assert "+1.54 %" in html
    row = _row(html, channel)
    assert (row["low"], row["high"]) == ("60000", "64000")
    assert float(row["distance"]) == pytest.approx(-1000 / 65000 * 100)  # the nearer bound
    assert _row(html, move)["pct"] == "2.5"  # no window kept yet: no distance
    assert _row(html, move)["distance"] == ""
    assert 'id="alert-tools"' in html and 'id="alert-chart"' in html


def test_an_edit_swaps_the_row_for_a_form_and_back(client, app, uid):
    alert_id = _alert(app, uid, type="above", price=65000, note="old")
    form = client.get(f"/alerts/{alert_id}/edit", headers=HTMX).get_data(as_text=True)
    assert form.lstrip().startswith(f'<tr id="alert-{alert_id}" class="editing"')
    assert f'id="edit-{alert_id}-price" name="price" type="text" value="65000"' in form
    token = csrf_token(client, "/alerts/")
    fields = {"csrf_token": token, "price": "-1", "mode": "once", "buffer": "", "cooldown_s": "",
              "expires_at": "", "note": "new"}
    refused = client.post(f"/alerts/{alert_id}/edit", data=fields, headers=HTMX)
    assert refused.status_code == 422
    html = refused.get_data(as_text=True)
    assert f'aria-invalid="true" aria-describedby="edit-{alert_id}-price-error"' in html
    assert 'value="new"' in html  # what was typed stays
    saved = client.post(f"/alerts/{alert_id}/edit", data={**fields, "price": "66,000"},
                        headers=HTMX)
    assert saved.status_code == 200
    assert _row(saved.get_data(as_text=True), alert_id)["level"] == "66000"
    with app.app_context():
        alert = db.session.get(Alert, alert_id)
        assert (alert.target, alert.note) == (66000, "new")
    back = client.get(f"/alerts/{alert_id}/row", headers=HTMX).get_data(as_text=True)
    assert "class=\"editing\"" not in back and _row(back, alert_id)["note"] == "new"


def test_without_javascript_an_edit_is_a_page_and_saving_redirects(client, app, uid):
    alert_id = _alert(app, uid, type="channel_enter", low=60000, high=64000)
    page = client.get(f"/alerts/{alert_id}/edit").get_data(as_text=True)
    assert "<title>Edit alert" in page and f'id="edit-{alert_id}-high"' in page
    token = csrf_token(client, "/alerts/")
    fields = {"csrf_token": token, "low": "61000", "high": "60000", "mode": "once"}
    refused = client.post(f"/alerts/{alert_id}/edit", data=fields)
    assert refused.status_code == 422 and "high must be above low" in refused.get_data(
        as_text=True)
    saved = client.post(f"/alerts/{alert_id}/edit", data={**fields, "high": "65000"})
    assert saved.status_code == 302
    with app.app_context():
        assert db.session.get(Alert, alert_id).high == 65000


def test_another_users_alert_is_not_found(client, app, auth, uid):
    other = _alert(app, auth.create("other@example.com"), type="above", price=1)
    for path in ("edit", "row", "copy"):
        assert client.get(f"/alerts/{other}/{path}", headers=HTMX).status_code == 404
    token = csrf_token(client, "/alerts/")
    assert client.post(f"/alerts/{other}/edit", data={"csrf_token": token}).status_code == 404


def test_duplicate_fills_the_create_form_in_the_users_zone(client, app, uid):
    with app.app_context():
        db.session.add(Preference(user_id=uid, timezone="Asia/Tokyo"))
        db.session.commit()
    alert_id = _alert(app, uid, type="channel_exit", low=60000, high=64000.5, note="range",
                      mode="recurring", buffer="0.2%", expires_at="2030-01-01T00:00:00Z")
    form = client.get(f"/alerts/{alert_id}/copy", headers=HTMX).get_data(as_text=True)
    assert form.lstrip().startswith('<form id="alert-form"')
    for name, value in (("symbol", "BTCUSDT"), ("low", "60000"), ("high", "64000.5"),
                        ("note", "range"), ("buffer", "0.2%"),
                        ("expires_at", "2030-01-01T09:00")):  # midnight UTC in Tokyo
        assert re.search(rf'name="{name}"[^>]* value="{re.escape(value)}"', form), name
    assert '<option value="channel_exit" selected>' in form
    assert '<option value="recurring" selected>' in form
    with app.app_context():  # nothing was added
        assert db.session.scalar(db.select(db.func.count(Alert.id))) == 1
    page = client.get(f"/alerts/{alert_id}/copy").get_data(as_text=True)  # without JavaScript
    assert 'name="high" value="64000.5"' in page and "<table" in page


def test_duplicating_an_expired_alert_leaves_the_expiry_out(client, app, uid):
    alert_id = _alert(app, uid, type="above", price=1, expires_at="2030-01-01T00:00:00Z")
    with app.app_context():
        db.session.get(Alert, alert_id).expires_at = datetime(2020, 1, 1)
        db.session.commit()
    form = client.get(f"/alerts/{alert_id}/copy", headers=HTMX).get_data(as_text=True)
    assert 'name="expires_at" type="datetime-local" value=""' in form


def test_the_chart_has_recent_prices_and_where_the_users_alerts_fired(client, app, auth, uid):
    now = clock.now_ms()
    alert_id = _alert(app, uid, type="above", price=65000)
    other = auth.create("other@example.com")

    def fire(user, symbol, price, ts, alert=alert_id):
        inbox.store({"user_id": user, "type": "PRICE_ALERT", "title": "fired", "alert_id": alert,
                     "data": {"symbol": symbol, "price": price}}, now_ms=ts)

    with app.app_context():
        price_history.record("BTCUSDT", 64000, now - 3 * 86400_000)
        price_history.record("BTCUSDT", 63000, now - 9 * 86400_000)  # older than 7 days
        get_redis().rpush(keys.spark("BTCUSDT"), json.dumps([now - 2000, 65010.5]))
        get_redis().hset(keys.price("BTCUSDT"), mapping={"price": "65020", "ts": now - 1000})
        fire(uid, "BTCUSDT", 65001, now - 3600_000)
        fire(uid, "ETHUSDT", 2500, now - 3600_000)
        fire(other, "BTCUSDT", 1, now - 60_000)
        inbox.store({"user_id": uid, "type": "ORDER_EXECUTED", "title": "bought"})
    data = client.get("/alerts/chart/btcusdt").get_json()
    assert data["symbol"] == "BTCUSDT"
    assert data["points"] == [[now - 3 * 86400_000, 64000], [now - 3600_000, 65001],
                              [now - 2000, 65010.5], [now - 1000, 65020]]
    assert data["fired"] == [{"alert_id": alert_id, "ts": now - 3600_000, "price": 65001,
                              "title": "fired"}]
    assert client.get("/alerts/chart/not-a-symbol").status_code == 404


def test_symbol_suggestions_show_the_last_price(client, app, uid):
    with app.app_context():
        symbols.store(["BTCUSDT", "BTCUSDC", "ETHUSDT"])
    _price(app, "BTCUSDT", "65000.1")
    html = client.get("/alerts/symbols?symbol=btc", headers=HTMX).get_data(as_text=True)
    assert '<option value="BTCUSDT" label="BTCUSDT · 65000.1"></option>' in html
    assert '<option value="BTCUSDC"></option>' in html  # no trade seen: no price
    assert 'id="symbol-quote"' in html and "data-quote-price" not in html  # not one symbol
    html = client.get("/alerts/symbols?symbol=BTCUSDT", headers=HTMX).get_data(as_text=True)
    assert re.search(r'data-symbol="BTCUSDT">BTCUSDT: last <span data-quote-price>65000.1', html)


def test_the_dashboard_shows_each_tickers_24h_change(client, app, uid):
    _alert(app, uid, type="above", price=70000)
    with app.app_context():
        alerts.create_alert(uid, {"symbol": "ETHUSDT", "type": "above", "price": 3000})
        price_history.record("BTCUSDT", 60000, clock.now_ms() - tickers.DAY_MS - 600_000)
    _price(app, "BTCUSDT", "63000")
    _price(app, "ETHUSDT", "2500")
    html = client.get("/dashboard").get_data(as_text=True)
    assert "+5.00 % in 24 h" in html and 'data-day-ago="60000.0"' in html
    assert "24 h change: –" in html  # ETHUSDT: no sample a day ago


def test_a_change_needs_both_prices():
    assert tickers.change_pct(100, "105") == 5.0
    assert tickers.change_pct(None, 1) is None and tickers.change_pct(0, 1) is None
