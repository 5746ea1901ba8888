"""Notification settings through the API: what the settings page edits, all or nothing."""

import pytest

from tests.conftest import csrf_token
from webapp.preferences import service as preferences

pytestmark = pytest.mark.both_databases


@pytest.fixture
def key(auth):
    auth.create()
    return auth.api_key()


def call(client, method, key, body=None, headers=None):
    headers = {**({"X-API-Key": key} if key else {}), **(headers or {})}
    return client.open("/api/v1/preferences", method=method, json=body, headers=headers)


def test_get_gives_every_setting_with_the_types_that_insist(client, key):
    body = call(client, "GET", key).json
    assert set(body) == set(preferences.FIELDS)
    assert body["max_per_minute"] == 10 and body["insist_every_min"] == 5
    insisting = body["insist_types"]
    assert "RISK_LIMIT_BREACHED" in insisting and "PRICE_ALERT" not in insisting


def test_patch_saves_what_it_names_and_leaves_the_rest(client, key):
    answer = call(client, "PATCH", key, {
        "insist_every_min": 1, "insist_rounds": 3, "insist_types": ["PRICE_ALERT"],
        "email_alerts": False, "phone": "+1 415 555 0123", "quiet_start": "22:00",
        "quiet_end": "06:00"})
    assert answer.status_code == 200, answer.json
    body = call(client, "GET", key).json
    assert (body["insist_every_min"], body["insist_rounds"], body["insist_types"]) == (
        1, 3, ["PRICE_ALERT"])
    assert (body["email_alerts"], body["phone"], body["rt_price_alerts"]) == (
        False, "+14155550123", True)
    reset = call(client, "PATCH", key, {"insist_types": None, "phone": None}).json
    assert "ACCOUNT_SECURITY" in reset["insist_types"] and reset["phone"] is None


@pytest.mark.parametrize("body, field", [
    ({"email_alerts": "yes"}, "email_alerts"),
    ({"email_alerts": 1}, "email_alerts"),
    ({"insist_every_min": 0}, "insist_every_min"),
    ({"insist_every_min": 1.5}, "insist_every_min"),
    ({"insist_every_min": True}, "insist_every_min"),
    ({"insist_rounds": "NaN"}, "insist_rounds"),
    ({"max_per_minute": -1}, "max_per_minute"),
    ({"insist_types": "RISK_VIOLATION"}, "insist_types"),
    ({"insist_types": ["<script>alert(1)</script>"]}, "insist_types"),
    ({"insist_types": [1]}, "insist_types"),
    ({"insist_types": [[1]]}, "insist_types"),
    ({"insist_types": [{}]}, "insist_types"),
    ({"timezone": 5}, "timezone"),
    ({"timezone": "\ud800"}, "timezone"),
    ({"quiet_start": "25:00"}, "quiet_start"),
    ({"phone": ["+14155550123"]}, "phone"),
    ({"is_admin": True}, "is_admin"),
])
def test_bad_values_are_422_per_field_and_nothing_changes(client, key, body, field):
    before = call(client, "GET", key).json
    answer = call(client, "PATCH", key, {"insist_rounds": 7, **body})
    assert answer.status_code == 422 and field in answer.json["detail"], answer.json
    assert call(client, "GET", key).json == before


def test_every_bad_field_is_named_in_one_answer(client, key):
    answer = call(client, "PATCH", key, {"quiet_start": "25:00", "max_per_minute": "x",
                                         "bogus": 1, "insist_rounds": 7})
    assert answer.status_code == 422
    assert set(answer.json["detail"]) == {"quiet_start", "max_per_minute", "bogus"}


@pytest.mark.parametrize("raw, status", [(b"", 422), (b"[]", 422), (b"null", 422),
                                         (b"{", 422), (b"x" * 70000, 413)])
def test_a_body_that_is_no_json_object_is_refused(client, key, raw, status):
    answer = client.patch("/api/v1/preferences", data=raw, headers={
        "X-API-Key": key, "Content-Type": "application/json"})
    assert answer.status_code == status


def test_settings_need_a_key_and_a_session_caller_needs_csrf(client, auth):
    assert call(client, "GET", None).status_code == 401
    assert call(client, "PATCH", None, {"insist_rounds": 2}).status_code == 401
    auth.create()
    auth.login()
    assert call(client, "GET", None).status_code == 200
    assert call(client, "PATCH", None, {"insist_rounds": 2}).status_code == 400
    token = csrf_token(client, "/settings/notifications/")
    answer = call(client, "PATCH", None, {"insist_rounds": 2}, headers={"X-CSRFToken": token})
    assert answer.status_code == 200 and answer.json["insist_rounds"] == 2
