"""POST /api/v1/events reads bodies with orjson and writes with it: what it reads, refuses,
stores and counts must stay what the standard library's reading gave (webapp/notify/intake.py
parse, webapp/core/jsontext.py)."""

import json

import pytest

from tests.hub import make_user
from webapp.inbox import service as inbox
from webapp.notify import intake as events

pytestmark = pytest.mark.both_databases


def post_raw(client, token, raw, key=None):
    headers = {"Authorization": f"Bearer {token}"}
    if key:
        headers["Idempotency-Key"] = key
    return client.post("/api/v1/events", data=raw, content_type="application/json",
                       headers=headers)


def event(uid, **extra):
    return {"type": "ORDER_EXECUTED", "user_id": uid, "title": "Bought 0.5 BTC", **extra}


def stored_data(app, uid):
    with app.app_context():
        return [n["data"] for n in inbox.list_page(uid, limit=100)[0]]


@pytest.mark.parametrize(("raw", "detail"), [
    (b'[{"type": "ORDER_EXECUTED", "title": "\xff"}]', "Send JSON encoded as UTF-8."),
    (b'[{"type": "ORDER_EXECUTED",', "Send valid JSON."),
    (b'{"data": {"x": NaN}}', "NaN is not valid JSON; send numbers only."),
    (b'{"data": {"x": -Infinity}}', "-Infinity is not valid JSON; send numbers only."),
    (b'{"data": {"x": 1e999}}', "1e999 is too large a number."),
    (b'{"title": "\\ud800"}',
     "Text must be valid Unicode: a lone UTF-16 surrogate is not a character."),
    (b'[]', 'Send an event object, a list of them or {"events": [...]}.'),
    (b"[" * 100_000 + b"]" * 100_000, "The JSON is nested too deeply."),
    (b'{"data": {"x": 1' + b"0" * 5000 + b"}}", "A number of at most 100 digits, not 5001."),
])
def test_refused_bodies_keep_their_messages(app, client, token, raw, detail):
    response = post_raw(client, token, raw)
    assert response.status_code == 422
    assert response.json == {"error": "invalid_input", "detail": detail}


def test_integers_beyond_64_bits_are_stored_as_integers(app, client, token):
    uid = make_user(app, "big@example.com")
    data = {"big": 2**70, "low": -(2**63) - 1, "max": 2**64 - 1}
    response = post_raw(client, token, json.dumps(event(uid, data=data)))
    assert response.status_code == 202, response.json
    assert stored_data(app, uid) == [data]
    assert all(type(v) is int for v in stored_data(app, uid)[0].values())


def test_a_body_with_a_utf8_byte_order_mark_is_still_read(app, client, token):
    uid = make_user(app, "bom@example.com")
    response = post_raw(client, token, b"\xef\xbb\xbf" + json.dumps(event(uid)).encode())
    assert response.status_code == 202, response.json


def test_data_is_measured_as_json_dumps_writes_it(app, client, token):
    """A DEL or an é is one or two bytes of UTF-8 but six characters as json.dumps escapes it:
    the limit counts the characters, at DATA_MAX and one past it."""
    uid = make_user(app, "size@example.com")
    text = "\x7f" * 700 + "é" * 600 + "a" * 383
    assert len(json.dumps({"s": text})) == events.DATA_MAX
    fits = post_raw(client, token, json.dumps(event(uid, data={"s": text})))
    assert fits.status_code == 202, fits.json
    over = post_raw(client, token, json.dumps(event(uid, data={"s": text + "a"})))
    assert over.status_code == 422
    assert over.json["results"][0]["errors"] == {"data": "At most 8192 bytes of JSON."}
    assert stored_data(app, uid) == [{"s": text}]


def test_a_retry_is_the_same_request_however_it_is_spelled(app, client, token):
    uid = make_user(app, "spelt@example.com")
    first = post_raw(client, token, json.dumps(event(uid, data={"a": 0.5, "é": 1})), key="k")
    spelt = ('{"data": {"\\u00e9": 1, "a": 5e-1}, "title": "Bought 0.5 BTC", '
             f'"type": "ORDER_EXECUTED", "user_id": {uid}}}')
    again = post_raw(client, token, spelt, key="k")
    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true" and again.json["ids"] == first.json["ids"]
    other = post_raw(client, token, spelt.replace('"\\u00e9": 1', '"\\u00e9": 1.0'), key="k")
    assert other.status_code == 422 and other.json["error"] == "idempotency_key_reused"
    assert len(stored_data(app, uid)) == 1


def test_the_answer_is_the_json_jsonify_wrote(app, client, token):
    """Sorted keys and a final newline, as jsonify wrote; text in UTF-8 (jsonify wrote \\u
    escapes), so a non-ASCII field name comes back as sent."""
    uid = make_user(app, "answer@example.com")
    response = post_raw(client, token, json.dumps([event(uid), event(uid, **{"ünknown": 1})]))
    assert response.status_code == 422
    assert response.data == json.dumps(response.json, sort_keys=True, ensure_ascii=False,
                                       separators=(",", ":")).encode() + b"\n"
    assert response.json["results"][1]["errors"] == {"ünknown": "Unknown field."}
