"""The destinations JSON API: add, list, change, delete; auth, ownership and bad input."""

import json
import re
import threading
from pathlib import Path

import pytest

from tests.conftest import csrf_token
from webapp.extensions import db
from webapp.models import Destination

PUBLIC = "https://93.184.215.14"  # an address on the public internet: no DNS, never reached
HOOK = {"kind": "webhook", "name": "desk bot", "url": f"{PUBLIC}/hooks/p4th-s3cret?token=abc"}
TELEGRAM = {"kind": "apprise", "name": "phone",
            "url": "tgram://123456789:AAbbCCddEEffGGhhIIjjKKllMMnnOOppQQ/987654"}


@pytest.fixture
def key(auth):
    auth.create()
    return {"X-API-Key": auth.api_key()}


def post(client, body, headers, path="/api/v1/destinations"):
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(path, data=data, headers=headers, content_type="application/json")


def patch(client, dest_id, body, headers):
    return client.patch(f"/api/v1/destinations/{dest_id}", data=json.dumps(body),
                        headers=headers, content_type="application/json")


@pytest.mark.both_databases
def test_create_list_delete_a_webhook_with_its_secret_shown_once(client, key):
    created = post(client, HOOK, key)
    assert created.status_code == 201
    body = created.get_json()
    assert body["kind"] == "webhook" and body["name"] == "desk bot" and body["enabled"] is True
    assert body["types"] is None and body["escalate"] is True and body["failures"] == 0
    assert len(body["secret"]) >= 32
    assert body["url_masked"] == f"{PUBLIC}/…"  # no path, no query: they can hold secrets
    listed = client.get("/api/v1/destinations", headers=key).get_json()
    assert [d["id"] for d in listed] == [body["id"]] and "secret" not in listed[0]
    assert body["secret"] not in json.dumps(listed) and "p4th" not in json.dumps(listed)
    assert client.delete(f"/api/v1/destinations/{body['id']}", headers=key).status_code == 204
    assert client.get("/api/v1/destinations", headers=key).get_json() == []
    assert client.delete(f"/api/v1/destinations/{body['id']}", headers=key).status_code == 404


def test_apprise_url_is_shown_only_in_apprises_private_form(client, key):
    body = post(client, {**TELEGRAM, "types": ["PRICE_ALERT", "RISK_VIOLATION"],
                         "escalate": False}, key).get_json()
    assert body["url_masked"].startswith("tgram://") and "AAbbCC" not in body["url_masked"]
    assert len(body["url_masked"]) <= 120
    assert "secret" not in body and body["escalate"] is False
    assert body["types"] == ["PRICE_ALERT", "RISK_VIOLATION"]


@pytest.mark.parametrize("url, hidden", [("ntfy://my-secret-topic", "secret"),
                                         ("json://93.184.215.14/hooks/TOPSECRET", "TOPSECRET")])
def test_a_topic_or_path_that_is_the_credential_is_not_shown(client, key, url, hidden):
    body = post(client, {**TELEGRAM, "url": url}, key).get_json()
    assert hidden not in body["url_masked"] and body["url_masked"].endswith("/…")


def test_a_given_secret_is_kept_and_not_echoed(app, client, key):
    body = post(client, {**HOOK, "secret": "my-own-secret-1234567"}, key).get_json()
    assert "secret" not in body
    with app.app_context():
        from webapp.core import secretbox

        dest = db.session.get(Destination, body["id"])
        assert secretbox.decrypt(dest.secret_encrypted) == "my-own-secret-1234567"


@pytest.mark.parametrize(("body", "field"), [
    ({**HOOK, "kind": "sms"}, "kind"),
    ({**HOOK, "kind": None}, "kind"),
    ({**HOOK, "name": ""}, "name"),
    ({**HOOK, "name": "   "}, "name"),
    ({**HOOK, "name": "x" * 81}, "name"),
    ({**HOOK, "name": "bell\x07"}, "name"),
    ({**HOOK, "name": "evil\u202ename"}, "name"),
    ({**HOOK, "name": "\udc00"}, "name"),
    ({**HOOK, "name": 42}, "name"),
    ({**HOOK, "url": ""}, "url"),
    ({**HOOK, "url": ["https://x"]}, "url"),
    ({**HOOK, "url": PUBLIC + "/" + "a" * 2000}, "url"),
    ({**HOOK, "url": "ftp://93.184.215.14/x"}, "url"),
    ({**HOOK, "url": "http://93.184.215.14/x"}, "url"),
    ({**HOOK, "url": "https://"}, "url"),
    ({**HOOK, "url": "https://93.184.215.14:99999/"}, "url"),
    ({**HOOK, "url": "https://user:pw@93.184.215.14/"}, "url"),
    ({**HOOK, "url": "https://93.184.215.14/a b"}, "url"),
    ({**HOOK, "url": "https://93.184.215.14/\udc00"}, "url"),
    ({**TELEGRAM, "url": "nosuchservice://abc"}, "url"),
    ({**TELEGRAM, "url": "https://93.184.215.14/"}, "url"),
    ({**HOOK, "secret": "short"}, "secret"),
    ({**HOOK, "secret": 12345678901234567890}, "secret"),
    ({**HOOK, "secret": "s" * 201}, "secret"),
    ({**TELEGRAM, "secret": "a-secret-for-apprise-1234"}, "secret"),
    ({**HOOK, "types": []}, "types"),
    ({**HOOK, "types": "PRICE_ALERT"}, "types"),
    ({**HOOK, "types": ["NOPE"]}, "types"),
    ({**HOOK, "types": [1]}, "types"),
    ({**HOOK, "escalate": "yes"}, "escalate"),
    ({**HOOK, "escalate": None}, "escalate"),
    ({**HOOK, "colour": "red"}, "colour"),
])
def test_bad_input_is_422_naming_the_field_and_stores_nothing(app, client, key, body, field):
    response = post(client, body, key)
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"] == "invalid_input"
    assert field in response.get_json()["detail"]
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Destination.id))) == 0


@pytest.mark.parametrize("raw", ["", "not json", "[1, 2]", "null", '{"name": NaN}'])
def test_bodies_that_are_not_one_json_object_are_422(client, key, raw):
    response = post(client, raw, key)
    assert response.status_code == 422 and response.get_json()["error"] == "invalid_input"


def test_a_body_nested_too_deeply_is_said_so(client, key):
    response = post(client, "[" * 7000 + "]" * 7000, key)  # under 16 KiB, past the parser
    assert response.status_code == 422
    assert response.get_json()["detail"]["body"] == "The JSON is nested too deeply."


@pytest.mark.parametrize("raw", ["{" * 100_000, json.dumps({**HOOK, "pad": "x" * 20_000})])
def test_a_body_over_16_kib_is_413_and_makes_nothing(app, client, key, raw):
    response = post(client, raw, key)
    assert response.status_code == 413 and response.is_json
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Destination.id))) == 0


@pytest.mark.parametrize("url", [
    "https://127.0.0.1/hook", "https://localhost/hook", "https://10.1.2.3/hook",
    "https://[::1]/hook", "https://169.254.169.254/latest", "https://[::ffff:192.168.0.1]/x",
    "https://a.localhost/hook", "https://[::127.0.0.1]/x", "https://[64:ff9b::7f00:1]/x",
    "https://[fe80::1%25eth0]/x", "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/teredo"])
def test_private_and_loopback_webhooks_are_refused_at_save(client, key, url):
    response = post(client, {**HOOK, "url": url}, key)
    assert response.status_code == 422
    assert "private" in response.get_json()["detail"]["url"] or \
        "this machine" in response.get_json()["detail"]["url"]


@pytest.mark.parametrize("url", ["json://127.0.0.1:9/x", "ntfy://localhost/topic",
                                 "mailto://u:p@example.com?smtp=10.0.0.1",
                                 "json://[::1]:8080/v6", "ntfy://[::ffff:127.0.0.1]/t",
                                 "json://[fe80::1%eth0]:80/x", "json://[fd00:ec2::254]/meta",
                                 "json://[2002:7f00:1::]/6to4", "json://[::127.0.0.1]/x",
                                 "gotify://[64:ff9b::a00:1]/token",
                                 "fcm://proj/abcdef?keyfile=http://127.0.0.1:9/k.json",
                                 "fcm://proj/abcdef?keyfile=/etc/passwd",
                                 # files named as plain text: read, or probed for, on a test
                                 "vapid://user@example.org/abcd?keyfile=/etc/passwd",
                                 "vapid://user@example.org/abcd?SubFile=instance/x.db",
                                 "mailto://u:p@example.com?pgppub=/etc/passwd",
                                 "mailto://u:p@example.com?pgpprv=/root/.ssh/id_rsa",
                                 "rsyslog://example.com/local5"])
def test_apprise_urls_aimed_at_private_hosts_are_refused(client, key, url):
    response = post(client, {**TELEGRAM, "url": url}, key)
    assert response.status_code == 422 and "url" in response.get_json()["detail"]


@pytest.mark.parametrize(("url", "said"), [
    (f"https://{'a' * 300}.example/hook", "not a host name"),
    (f"https://{'a' * 64}.example/hook", "not a host name"),
    (f"https://{'abc.' * 70}example/hook", "not a host name"),
    ("https://a..example/hook", "not a host name"),
    ("https://exa%mple.com/", "not a host name"), ("https://a!b$c.com/", "not a host name"),
    ("https://-a-.com/", "not a host name"), ("https://xn--/", "not a host name"),
    ("https://%31%32%37.0.0.1/", "not a host name"),
    ("https://hooks.example:0/in", "Port 0")])
def test_urls_whose_host_or_port_cannot_exist_are_refused_at_save(app, client, key, url, said):
    response = post(client, {**HOOK, "url": url}, key)
    assert response.status_code == 422, response.get_json()
    assert said in response.get_json()["detail"]["url"]
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Destination.id))) == 0


def test_an_apprise_url_on_port_0_is_refused_at_save(app, client, key):
    response = post(client, {**TELEGRAM, "url": "jsons://hooks.example:0/in"}, key)
    assert response.status_code == 422 and "Port 0" in response.get_json()["detail"]["url"]


def test_private_addresses_and_http_are_allowed_when_configured(make_app, auth):
    app = make_app(DESTINATIONS_ALLOW_PRIVATE=True)
    client = app.test_client()
    auth.__init__(client, app)
    auth.create()
    headers = {"X-API-Key": auth.api_key()}
    assert post(client, {**HOOK, "url": "http://127.0.0.1:9/hook"}, headers).status_code == 201
    assert post(client, {**TELEGRAM, "url": "json://127.0.0.1:9/x"}, headers).status_code == 201


def test_names_are_unique_per_user_not_across_users(client, key, auth):
    assert post(client, HOOK, key).status_code == 201
    again = post(client, {**TELEGRAM, "name": "desk bot"}, key)
    assert again.status_code == 422 and "name" in again.get_json()["detail"]
    auth.create("other@example.com")
    other = {"X-API-Key": auth.api_key("other@example.com")}
    assert post(client, HOOK, other).status_code == 201


def test_a_user_has_at_most_twenty_destinations(client, key):
    for n in range(20):
        assert post(client, {**TELEGRAM, "name": f"d{n}"}, key).status_code == 201
    over = post(client, {**TELEGRAM, "name": "one more"}, key)
    assert over.status_code == 422 and "destinations" in over.get_json()["detail"]
    assert len(client.get("/api/v1/destinations", headers=key).get_json()) == 20


def test_patch_renames_switches_and_chooses_types(client, key):
    dest = post(client, HOOK, key).get_json()
    changed = patch(client, dest["id"], {"name": "renamed", "types": ["ORDER_EXECUTED"],
                                         "escalate": False, "enabled": False}, key)
    assert changed.status_code == 200
    body = changed.get_json()
    assert (body["name"], body["types"], body["escalate"], body["enabled"]) == \
        ("renamed", ["ORDER_EXECUTED"], False, False)
    assert body["disabled_reason"] == "switched off by you"
    back = patch(client, dest["id"], {"enabled": True, "types": None}, key).get_json()
    assert back["enabled"] is True and back["disabled_reason"] is None and back["types"] is None


@pytest.mark.parametrize("body", [{"enabled": "no"}, {"url": "https://93.184.215.14/"},
                                  {"name": ""}, {"types": ["NOPE"]}, {"name": "ok", "x": 1}])
def test_bad_patch_is_422_and_changes_nothing(client, key, body):
    dest = post(client, HOOK, key).get_json()
    assert patch(client, dest["id"], body, key).status_code == 422
    [after] = client.get("/api/v1/destinations", headers=key).get_json()
    assert after == {k: v for k, v in dest.items() if k != "secret"}


def test_another_users_destination_answers_404_everywhere(client, key, auth):
    auth.create("other@example.com")
    other = {"X-API-Key": auth.api_key("other@example.com")}
    theirs = post(client, HOOK, other).get_json()["id"]
    path = f"/api/v1/destinations/{theirs}"
    assert client.delete(path, headers=key).status_code == 404
    assert patch(client, theirs, {"name": "mine"}, key).status_code == 404
    assert post(client, {}, key, path=path + "/test").status_code == 404
    assert client.get("/api/v1/destinations", headers=key).get_json() == []
    assert client.get("/api/v1/destinations", headers=other).get_json()[0]["name"] == "desk bot"


def test_without_auth_every_endpoint_is_401(client):
    assert client.get("/api/v1/destinations").status_code == 401
    assert post(client, HOOK, {}).status_code == 401
    assert client.delete("/api/v1/destinations/1").status_code == 401
    assert post(client, {}, {}, path="/api/v1/destinations/1/test").status_code == 401


def test_a_session_caller_must_send_the_csrf_token(client, auth):
    auth.create()
    auth.login()
    assert post(client, HOOK, {}).status_code == 400
    token = csrf_token(client, "/dashboard")
    assert post(client, HOOK, {"X-CSRFToken": token}).status_code == 201


def test_url_and_secret_are_not_stored_in_plain_text(app, client, key):
    body = post(client, {**HOOK, "secret": "plain-secret-abcdefgh"}, key).get_json()
    with app.app_context():
        row = db.session.execute(db.text(
            "select url_encrypted, secret_encrypted, url_masked from destinations where id = :i"),
            {"i": body["id"]}).one()
    raw = " ".join(row)
    assert "p4th-s3cret" not in raw and "token=abc" not in raw and "plain-secret" not in raw
    assert row[0].startswith("gAAAA")  # a Fernet token


def test_renaming_onto_a_taken_name_is_422(client, key):
    post(client, HOOK, key)
    other = post(client, TELEGRAM, key).get_json()
    answer = patch(client, other["id"], {"name": "desk bot"}, key)
    assert answer.status_code == 422 and "name" in answer.get_json()["detail"]
    assert patch(client, other["id"], {"name": "phone"}, key).status_code == 200  # its own


def test_switching_on_again_clears_the_count_and_the_reason(app, client, key):
    dest = post(client, HOOK, key).get_json()
    with app.app_context():
        row = db.session.get(Destination, dest["id"])
        row.enabled, row.failures, row.disabled_reason = False, 20, "20 deliveries failed"
        db.session.commit()
    listed = client.get("/api/v1/destinations", headers=key).get_json()[0]
    assert (listed["enabled"], listed["failures"]) == (False, 20)
    on = patch(client, dest["id"], {"enabled": True}, key).get_json()
    assert (on["enabled"], on["failures"], on["disabled_reason"]) == (True, 0, None)


def test_tests_are_limited_per_minute(make_app, auth, refused_port, monkeypatch):
    monkeypatch.setenv("DESTINATION_TESTS_PER_MINUTE", "2")  # as the README sets it
    app = make_app(DESTINATIONS_ALLOW_PRIVATE=True)
    client = app.test_client()
    auth.__init__(client, app)
    auth.create()
    headers = {"X-API-Key": auth.api_key()}
    closed = f"http://127.0.0.1:{refused_port}/hook"  # nothing listens: each test fails
    dest = post(client, {**HOOK, "url": closed}, headers).get_json()
    path = f"/api/v1/destinations/{dest['id']}/test"
    for _ in range(2):
        answer = post(client, {}, headers, path=path)
        assert answer.status_code == 200 and answer.get_json()["ok"] is False
    over = post(client, {}, headers, path=path)
    assert over.status_code == 429 and int(over.headers["Retry-After"]) > 0


@pytest.mark.both_databases
@pytest.mark.parametrize("dest_id", ["0", "99999999999999999999999", "-1", "abc"])
def test_ids_out_of_any_range_answer_404(client, key, dest_id):
    path = f"/api/v1/destinations/{dest_id}"
    assert client.delete(path, headers=key).status_code == 404
    assert patch(client, dest_id, {"name": "x"}, key).status_code == 404
    assert post(client, {}, key, path=path + "/test").status_code == 404


@pytest.mark.both_databases
def test_requests_racing_for_the_last_place_get_one_between_them(app, client, key):
    """A user holds DESTINATIONS_PER_USER at most, also when ten requests come at once."""
    app.config["DESTINATIONS_PER_USER"] = 3
    for n in range(2):
        assert post(client, {**HOOK, "name": f"hook {n}"}, key).status_code == 201
    start, answers = threading.Barrier(10), []

    def race(n):
        start.wait()
        answers.append(post(app.test_client(), {**HOOK, "name": f"racer {n}"}, key))

    racers = [threading.Thread(target=race, args=(n,)) for n in range(10)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(30)
    assert sorted(a.status_code for a in answers) == [201] + [422] * 9
    assert {a.get_json()["detail"]["destinations"] for a in answers if a.status_code == 422} \
        == {"You can have at most 3 destinations."}
    assert len(client.get("/api/v1/destinations", headers=key).get_json()) == 3


def test_the_readmes_destination_examples_are_taken(client, key):
    """What the README shows a newcomer to paste works as shown."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    examples = re.findall(r'`(\{"kind": "apprise"[^`]*\})`', readme)
    assert examples
    for example in examples:
        assert post(client, json.loads(example), key).status_code == 201, example
