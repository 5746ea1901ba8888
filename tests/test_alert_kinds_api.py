"""Every alert kind through the JSON API: its own fields, what is refused and why, and what
GET /alerts says about the market (last price, its time, distance_pct)."""

import json

import pytest

from webapp import keys
from webapp.alerts import fields, validation
from webapp.alerts import index as alert_index
from webapp.extensions import db, get_redis
from webapp.models import Alert

SYMBOL = {"symbol": "BTCUSDT"}
GOOD = {
    "above": {"price": 65000}, "below": {"price": 60000}, "volume_above": {"price": 1500},
    "crossing_up": {"price": 65000}, "crossing_down": {"price": 60000},
    "crossing": {"price": 62000}, "pct_up": {"pct": 2.5, "window": "1h"},
    "pct_down": {"pct": 5, "window": "5m"}, "channel_exit": {"low": 60000, "high": 64000},
    "channel_enter": {"low": 60000, "high": 64000},
}
KIND_FIELDS = {"price", "pct", "window", "low", "high"}
TS = 1_800_000_000_000  # a tick's ms
TS_ISO = "2027-01-15T08:00:00.000Z"


@pytest.fixture
def key(auth):
    auth.create()
    return {"X-API-Key": auth.api_key()}


def post(client, body, headers, raw=False):
    data = body if raw else json.dumps(body)
    return client.post("/api/v1/alerts", data=data, headers=headers,
                       content_type="application/json")


def count(app):
    with app.app_context():
        return db.session.scalar(db.select(db.func.count(Alert.id)))


@pytest.mark.both_databases
@pytest.mark.parametrize("kind", GOOD)
def test_each_type_is_created_with_its_own_fields(client, key, kind):
    response = post(client, {**SYMBOL, "type": kind, **GOOD[kind]}, key)
    assert response.status_code == 201, response.get_json()
    alert = response.get_json()
    assert alert["type"] == kind and {k: alert[k] for k in GOOD[kind]} == GOOD[kind]
    assert not (KIND_FIELDS - set(GOOD[kind])) & set(alert)  # no other kind's fields
    assert alert["cooldown_s"] == 0 and alert["message"] == ""
    assert alert["last_price"] is None and alert["distance_pct"] is None


@pytest.mark.both_databases
def test_cooldown_message_and_buffers_round_trip(client, key, app):
    body = {**SYMBOL, "type": "crossing", "price": 62000, "mode": "recurring",
            "buffer": "0.2%", "cooldown_s": 900, "message": "  BTC crossed\r\n\tsee chart  ",
            "note": "n", "expires_at": "2999-01-01T00:00:00Z"}
    alert = post(client, body, key).get_json()
    assert alert["cooldown_s"] == 900 and alert["buffer"] == "0.2%"
    assert alert["message"] == "BTC crossed\n\tsee chart"
    move = post(client, {**SYMBOL, "type": "pct_up", "pct": 3, "window": "4h",
                         "buffer": "0.5%", "mode": "recurring"}, key).get_json()
    assert move["buffer"] == 0.5  # percentage points of the move, however written
    channel = post(client, {**SYMBOL, "type": "channel_enter", "low": 1, "high": 2,
                            "buffer": "1%"}, key).get_json()
    assert channel["buffer"] == "1%"
    with app.app_context():
        row = db.session.get(Alert, move["id"])
        assert (row.condition, row.target, row.window_s, row.buffer, row.buffer_is_pct) == (
            "pct_up", 3, 14400, 0.5, False)
        row = db.session.get(Alert, channel["id"])
        assert (row.target, row.high) == (1, 2)


def test_the_api_offers_the_windows_and_kinds_the_matcher_keeps():
    assert sorted(fields.WINDOWS.values()) == sorted(alert_index.WINDOWS_S)
    assert set(validation.KINDS) == {*alert_index.SUFFIX, *alert_index.CROSSINGS,
                                     *alert_index.CHANNELS, *alert_index.MOVES}


def test_type_and_level_aliases_still_work(client, key):
    alert = post(client, {**SYMBOL, "condition": "crossing-up", "target": 5}, key).get_json()
    assert alert["type"] == "crossing_up" and alert["price"] == 5


def kind(name, **fields):
    return {**SYMBOL, "type": name, **GOOD[name], **fields}


def without(name, field):
    return {k: v for k, v in kind(name).items() if k != field}


BAD = [
    # another kind's fields, named as sent
    (kind("above", pct=2), "pct", "does not apply to type above: it takes price"),
    (kind("crossing", low=1), "low", "does not apply"),
    (kind("pct_up", price=1), "price", "it takes pct and window"),
    (kind("pct_down", target=1), "target", "does not apply"),
    (kind("channel_exit", window="1h"), "window", "it takes low and high"),
    (kind("channel_enter", price=5), "price", "does not apply"),
    (kind("volume_above", high=5), "high", "does not apply"),
    # missing
    (without("crossing_up", "price"), "price", "Required"),
    (without("pct_up", "pct"), "pct", "Required"),
    (without("pct_up", "window"), "window", "Required"),
    (without("channel_exit", "low"), "low", "Required"),
    (without("channel_enter", "high"), "high", "Required"),
    # negative, zero, huge
    (kind("crossing_down", price=-1), "price", "above 0"),
    (kind("pct_up", pct=0), "pct", "above 0"),
    (kind("pct_up", pct=-3), "pct", "above 0"),
    (kind("pct_up", pct=1000.5), "pct", "at most 1000"),
    (kind("pct_up", pct=1e300), "pct", "at most 1000"),
    (kind("pct_up", pct=10**400), "pct", "at most 1000"),
    (kind("pct_down", pct=100), "pct", "below 100"),
    (kind("channel_exit", low=-1), "low", "above 0"),
    (kind("channel_exit", high=1e15), "high", "below 10^15"),
    # a channel the wrong way round
    (kind("channel_exit", low=64000, high=64000), "high", "above low"),
    (kind("channel_enter", low=65000, high=64000), "high", "above low"),
    # windows not in the list
    (kind("pct_up", window="2h"), "window", "one of 1m, 5m, 15m, 1h, 4h, 24h"),
    (kind("pct_up", window=3600), "window", "Choose a window"),
    (kind("pct_down", window=""), "window", "Required"),
    # wrong types
    (kind("pct_up", pct="2"), "pct", "JSON number"),
    (kind("pct_up", pct=True), "pct", "Give a number"),
    (kind("channel_exit", low=[1]), "low", "Give a number"),
    (kind("above", cooldown_s="60"), "cooldown_s", "JSON number"),
    (kind("above", cooldown_s=1.5), "cooldown_s", "whole number"),
    (kind("above", cooldown_s=True), "cooldown_s", "whole number"),
    (kind("above", cooldown_s=-1), "cooldown_s", "negative"),
    (kind("above", cooldown_s=30 * 86400 + 1), "cooldown_s", "30 days"),
    (kind("above", cooldown_s=10**30), "cooldown_s", "30 days"),
    (kind("above", message=5), "message", "plain text"),
    (kind("above", message="a\x00b"), "message", "plain text"),
    (kind("above", message="price \u202eup"), "message", "direction override"),
    (kind("above", message="a\x85b\x9b"), "message", "plain text"),  # C1 controls
    (kind("above", message="\udc00"), "message", "surrogate"),
    (kind("above", message="x" * 501), "message", "500 characters"),
    (kind("pct_up", note="\ud800"), "note", "surrogate"),
    (kind("pct_up", note="a\x7fb"), "note", "single line"),
    (kind("pct_up", note="a\x85b"), "note", "single line"),
    (kind("pct_up", note="a\u2028b"), "note", "single line"),
    (kind("pct_up", note="abc\u202edef"), "note", "single line"),
    # buffers
    (kind("pct_up", buffer=2.5), "buffer", "less than pct (2.5)"),
    (kind("pct_up", buffer="3%"), "buffer", "less than pct"),
    (kind("pct_up", buffer=-1), "buffer", "above 0"),
    (kind("pct_up", buffer="x%"), "buffer", "Give a number"),
    (kind("pct_up", pct=0.4, mode="recurring"), "buffer", "default buffer"),
    (kind("channel_exit", buffer="60%"), "buffer", "at most 50%"),
    (kind("crossing", price=0.2, mode="recurring"), "buffer", "default buffer"),
    (kind("crossing_up", buffer=1, mode="recurring", price=1), "buffer", "smaller than"),
    # the type itself
    ({**SYMBOL, "type": "sideways", "price": 1}, "type", "crossing_up"),
]


@pytest.mark.parametrize("body, field, says", BAD)
def test_bad_input_is_422_saying_what_is_wrong(client, key, app, body, field, says):
    response = post(client, body, key)
    assert response.status_code == 422
    detail = response.get_json()["detail"]
    assert says in detail.get(field, ""), detail
    assert count(app) == 0


@pytest.mark.parametrize("raw, field", [
    ('{"symbol": "BTCUSDT", "type": "pct_up", "pct": NaN, "window": "1h"}', "pct"),
    ('{"symbol": "BTCUSDT", "type": "pct_up", "pct": Infinity, "window": "1h"}', "pct"),
    ('{"symbol": "BTCUSDT", "type": "channel_exit", "low": NaN, "high": 2}', "low"),
    ('{"symbol": "BTCUSDT", "type": "channel_exit", "low": 1, "high": -Infinity}', "high"),
    ('{"symbol": "BTCUSDT", "type": "above", "price": 1, "cooldown_s": NaN}', "cooldown_s"),
    ('{"symbol": "BTCUSDT", "type": "pct_up", "pct": 2, "window": "1h", "buffer": NaN}',
     "buffer"),
])
def test_non_finite_numbers_are_422(client, key, app, raw, field):
    response = post(client, raw, key, raw=True)
    assert response.status_code == 422 and field in response.get_json()["detail"]
    assert count(app) == 0


def test_every_wrong_field_is_named_at_once(client, key):
    body = {**SYMBOL, "type": "channel_exit", "price": 1, "pct": 2, "window": "1h",
            "low": 5, "high": 4}
    detail = post(client, body, key).get_json()["detail"]
    assert {"price", "pct", "window", "high"} <= set(detail)


# GET /alerts: the market's side


def tick(app, symbol="BTCUSDT", price=50000, volume=1000):
    with app.app_context():
        get_redis().hset(keys.price(symbol), mapping={
            "price": price, "ts": TS, "volume": volume, "vts": TS + 500})


def window(app, window_s, side, price, symbol="BTCUSDT"):
    """A move alert's window as the matcher keeps it: its extreme at the head."""
    with app.app_context():
        get_redis().rpush(keys.window(symbol, window_s, side), f"{TS - 60_000}:{price}")


READINGS = [  # the alert, then its distance_pct with BTCUSDT last at 50000, volume 1000
    (kind("above", price=55000), 10.0),
    (kind("below", price=45000), -10.0),
    (kind("crossing_up", price=51000), 2.0),
    (kind("crossing_down", price=49000), -2.0),
    (kind("crossing", price=50000), 0.0),
    (kind("volume_above", price=1500), 50.0),
    (kind("channel_exit", low=48000, high=52500), -4.0),  # low is nearer
    (kind("channel_exit", low=47000, high=51000), 2.0),  # high is nearer
    (kind("channel_enter", low=40000, high=45000), -10.0),  # above the channel
    (kind("channel_enter", low=55000, high=60000), 10.0),  # below it
    (kind("channel_enter", low=50000, high=60000), 0.0),  # on a bound
    (kind("pct_up", pct=5, window="1h"), 0.833333),  # up 4.1667% from the low 48000
    (kind("pct_down", pct=5, window="1h"), 1.153846),  # down 3.8462% from the high 52000
    (kind("pct_up", pct=5, window="24h"), None),  # no window kept yet
]


@pytest.mark.both_databases
def test_list_says_last_price_and_distance_for_each_kind(client, key, app):
    tick(app)
    window(app, 3600, "min", 48000)
    window(app, 3600, "max", 52000)
    made = {}
    for body, distance in READINGS:
        response = post(client, body, key)
        assert response.status_code == 201, response.get_json()
        made[response.get_json()["id"]] = (body, distance)
    listed = client.get("/api/v1/alerts", headers=key).get_json()
    assert len(listed) == len(READINGS)
    for item in listed:
        body, distance = made[item["id"]]
        assert item["distance_pct"] == distance, (body, item["distance_pct"])
        if body["type"] == "volume_above":
            assert (item["last_price"], item["last_price_at"]) == (1000, TS_ISO[:-4] + "500Z")
        else:
            assert (item["last_price"], item["last_price_at"]) == (50000, TS_ISO)


def test_distance_is_null_without_a_price_and_the_post_answer_has_it_too(client, key, app):
    tick(app, "ETHUSDT", price=2000)
    quiet = post(client, kind("above"), key).get_json()  # BTCUSDT: no tick yet
    assert (quiet["last_price"], quiet["last_price_at"], quiet["distance_pct"]) == (
        None, None, None)
    eth = post(client, {**kind("below"), "symbol": "ETHUSDT", "price": 1500}, key).get_json()
    assert eth["last_price"] == 2000 and eth["distance_pct"] == -25.0
    listed = {a["id"]: a for a in client.get("/api/v1/alerts", headers=key).get_json()}
    assert listed[quiet["id"]]["distance_pct"] is None
    assert listed[eth["id"]]["distance_pct"] == -25.0
