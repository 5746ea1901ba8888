"""The alerts page's create form makes every kind: the plain form sends every field, empty
ones count as not given, and errors land beside the field they are about."""

import re

import pytest

from tests.conftest import csrf_token
from webapp.extensions import db
from webapp.models import Alert

HTMX = {"HX-Request": "true"}
EMPTY = {name: "" for name in ("price", "pct", "window", "low", "high", "buffer", "cooldown_s",
                               "expires_at", "note", "message")}  # what the plain form sends


@pytest.fixture
def logged_in(auth):
    uid = auth.create()
    auth.login()
    return uid


def send(client, fields, htmx=True):
    token = csrf_token(client, "/alerts/")
    form = {**EMPTY, "symbol": "BTCUSDT", "mode": "once", **fields, "csrf_token": token}
    return client.post("/alerts/", data=form, headers=HTMX if htmx else {})


def stored(app):
    with app.app_context():
        return db.session.scalars(db.select(Alert)).one()


def test_the_form_offers_every_kind_and_labels_every_field(client, logged_in):
    page = client.get("/alerts/").get_data(as_text=True)
    form = page[page.index('<form id="alert-form"'):]
    form = form[:form.index("</form>")]
    kinds = re.findall(r'<option value="(\w+)"', form[form.index('id="type"'):])
    assert kinds[:10] == ["above", "below", "crossing_up", "crossing_down", "crossing",
                          "volume_above", "pct_up", "pct_down", "channel_exit", "channel_enter"]
    ids = set(re.findall(r'<(?:input|select|textarea) id="(\w+)"', form))
    assert {"price", "pct", "window", "low", "high", "cooldown_s", "message"} <= ids
    assert ids <= set(re.findall(r'<label for="(\w+)"', form))


@pytest.mark.parametrize("fields, expect", [
    ({"type": "pct_up", "pct": "2.5", "window": "4h", "buffer": "0.5%"},
     {"condition": "pct_up", "target": 2.5, "window_s": 14400, "buffer": 0.5}),
    ({"type": "channel_enter", "low": "60,000", "high": "64,000.5"},
     {"condition": "channel_enter", "target": 60000, "high": 64000.5}),
    ({"type": "crossing", "price": "65000", "cooldown_s": "600", "mode": "recurring",
      "message": "BTC at the line\r\ncheck it"},
     {"condition": "crossing", "cooldown_s": 600, "message": "BTC at the line\ncheck it"}),
])
def test_the_form_creates_each_kind(client, logged_in, app, fields, expect):
    response = send(client, fields)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_data(as_text=True).lstrip().startswith("<tr")
    alert = stored(app)
    assert {name: getattr(alert, name) for name in expect} == expect


def test_the_plain_form_creates_a_move_and_redirects(client, logged_in, app):
    response = send(client, {"type": "pct_down", "pct": "3", "window": "15m"}, htmx=False)
    assert response.status_code == 302
    assert (stored(app).condition, stored(app).window_s) == ("pct_down", 900)


@pytest.mark.parametrize("fields, field, says", [
    ({"type": "channel_exit", "low": "64000", "high": "60000"}, "high", "above low"),
    ({"type": "pct_up", "pct": "2"}, "window", "Required"),
    ({"type": "pct_up", "pct": "2", "window": "1h", "price": "65000"}, "price",
     "does not apply to type pct_up"),  # typed before the kind changed, without JavaScript
    ({"type": "above", "price": "1", "cooldown_s": "-1"}, "cooldown_s", "negative"),
    ({"type": "above", "price": "1", "cooldown_s": "9" * 5000}, "cooldown_s", "30 days"),
    ({"type": "above", "price": "1", "message": "x" * 501}, "message", "500 characters"),
])
def test_form_errors_show_beside_the_field_and_keep_the_kind(client, logged_in, app, fields,
                                                              field, says):
    response = send(client, fields)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    error = re.search(rf'<small class="error" id="{field}-error">([^<]*)</small>', html)
    assert error and says in error.group(1)
    assert f'<option value="{fields["type"]}" selected>' in html
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Alert.id))) == 0
