"""The alerts page: its list, creating an alert by HTMX and by a plain form, pause, resume and
delete, errors beside their fields, CSRF, escaping."""

import pytest

from tests.conftest import csrf_token
from tests.test_alerts import make
from webapp import keys
from webapp.alerts import index as alert_index
from webapp.extensions import get_redis


@pytest.fixture
def uid(auth):
    return auth.create()


HTMX = {"HX-Request": "true"}


def page_post(client, path, data=None, htmx=True):
    token = csrf_token(client, "/alerts/")
    headers = {**HTMX, "X-CSRFToken": token} if htmx else {}
    form = dict(data or {}) if htmx else {**(data or {}), "csrf_token": token}
    return client.post(path, data=form, headers=headers)


@pytest.fixture
def logged_in(auth, uid):
    auth.login()
    return uid


def test_page_lists_alerts_with_last_price(client, logged_in, app):
    with app.app_context():
        make(logged_in)
        get_redis().hset(keys.price("BTCUSDT"), "price", "98765.4")
    page = client.get("/alerts/").get_data(as_text=True)
    assert "BTCUSDT" in page and "98765.4" in page
    assert "fires on the next tick" in page


def test_page_needs_login(client):
    assert client.get("/alerts/").status_code == 302


def test_page_create_returns_the_new_row(client, logged_in):
    response = page_post(client, "/alerts/", {"symbol": "ethusdt", "type": "below",
                                              "price": "2500", "mode": "once"})
    assert response.status_code == 201
    html = response.get_data(as_text=True)
    assert html.lstrip().startswith("<tr") and "ETHUSDT" in html
    assert 'hx-swap-oob="outerHTML"' in html and 'hx-swap-oob="delete"' in html


def test_page_create_answers_the_row_even_when_its_market_cannot_be_read(client, app,
                                                                         logged_in):
    """Written and armed: an error page now would have the user create it again."""
    with app.app_context():  # reading the symbol's last values fails (WRONGTYPE)
        get_redis().rpush(keys.price("ETHUSDT"), "not a price")
    response = page_post(client, "/alerts/", {"symbol": "ethusdt", "type": "below",
                                              "price": "2500", "mode": "once"})
    assert response.status_code == 201
    assert "ETHUSDT" in response.get_data(as_text=True)


def test_page_create_shows_errors_beside_fields(client, logged_in):
    response = page_post(client, "/alerts/", {"symbol": "x", "type": "above", "price": "abc"})
    assert response.status_code == 422
    assert response.headers["HX-Retarget"] == "#alert-form"
    html = response.get_data(as_text=True)
    assert 'id="symbol-error"' in html and 'id="price-error"' in html
    assert 'id="type-error"' not in html


def test_page_create_without_csrf_is_refused(client, logged_in):
    response = client.post("/alerts/", data={"symbol": "BTCUSDT", "type": "above",
                                             "price": "1"}, headers=HTMX)
    assert response.status_code == 400


def test_page_plain_form_fallback(client, logged_in):
    response = page_post(client, "/alerts/", {"symbol": "BTCUSDT", "type": "above",
                                              "price": "1"}, htmx=False)
    assert response.status_code == 302
    response = page_post(client, "/alerts/", {"symbol": "BTCUSDT", "price": "-1"}, htmx=False)
    assert response.status_code == 422 and b"Give a number above 0" in response.data


@pytest.mark.both_databases
def test_page_pause_resume_delete(client, logged_in, app):
    with app.app_context():
        alert_id = make(logged_in).id
    paused = page_post(client, f"/alerts/{alert_id}/pause")
    assert paused.status_code == 200 and b"paused" in paused.data and b"Resume" in paused.data
    resumed = page_post(client, f"/alerts/{alert_id}/resume")
    assert b"active" in resumed.data and b"Pause" in resumed.data
    deleted = page_post(client, f"/alerts/{alert_id}/delete")
    assert deleted.status_code == 200  # the row swapped with nothing, the empty row again
    assert deleted.data.strip().startswith(b"<template>") and b"No alerts yet." in deleted.data
    assert page_post(client, f"/alerts/{alert_id}/delete").status_code == 404
    with app.app_context():
        assert alert_index.symbols() == {}


@pytest.mark.parametrize("alert_id", [0, 2**31, 2**63, 10**30])
@pytest.mark.parametrize("action", ["pause", "resume", "delete"])
def test_page_out_of_range_alert_id_is_404(client, logged_in, action, alert_id):
    assert page_post(client, f"/alerts/{alert_id}/{action}").status_code == 404
    assert page_post(client, f"/alerts/{alert_id}/{action}", htmx=False).status_code == 404


def test_page_escapes_the_note(client, logged_in):
    note = '<script>alert("x")</script>'
    response = page_post(client, "/alerts/", {"symbol": "BTCUSDT", "type": "above",
                                              "price": "1", "note": note})
    html = response.get_data(as_text=True)
    assert note not in html and "&lt;script&gt;" in html
    assert note not in client.get("/alerts/").get_data(as_text=True)


@pytest.mark.parametrize("htmx", [True, False])
@pytest.mark.parametrize(("extra", "said"), [
    ({"routing": "<x>"}, "Choose where it goes"),
    ({"tz": "Mars/X"}, "tz is not a field of an alert"),
])
def test_a_form_field_sent_by_hand_is_refused_and_said_on_the_page(client, logged_in, app,
                                                                  htmx, extra, said):
    """A routing the form never offers was taken for "as my preferences say"; a field no
    form has answered 422 with nothing shown."""
    response = page_post(client, "/alerts/", {"symbol": "BTCUSDT", "type": "above",
                                              "price": "70000", **extra}, htmx=htmx)
    assert response.status_code == 422
    assert said in response.get_data(as_text=True)
    with app.app_context():
        assert get_redis().hlen(keys.alerts("BTCUSDT")) == 0
