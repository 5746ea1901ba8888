"""Inbound webhooks: hooks made and revoked (API and settings page), TradingView's bodies in."""

import json
import logging
import re
import threading
from urllib.parse import urlsplit

import pytest

from tests.conftest import AuthActions, csrf_token
from tests.hub import run_jobs
from webapp.accounts import service as accounts
from webapp.extensions import db
from webapp.hooks import service as hooks
from webapp.models import HookToken

pytestmark = pytest.mark.both_databases

TV_JSON = {"title": "BTC breakout", "message": "BTCUSDT crossed 65000", "symbol": "BTCUSDT",
           "price": "65012.5", "strategy": "x", "type": "long", "priority": "high"}


@pytest.fixture
def key(auth):
    auth.create()
    return auth.api_key()


def api(client, method, path, key, **kwargs):
    return client.open(f"/api/v1{path}", method=method, headers={"X-API-Key": key}, **kwargs)


def new_hook(client, key, name="TradingView BTC"):
    response = api(client, "POST", "/hooks", key, json={"name": name})
    assert response.status_code == 201, response.json
    return response.json


def hook_path(hook):
    return urlsplit(hook["url"]).path


def post(client, hook, body, content_type="text/plain; charset=utf-8"):
    data = body if isinstance(body, bytes) else body.encode()
    return client.post(hook_path(hook), data=data, headers={"Content-Type": content_type},
                       environ_base={"REMOTE_ADDR": "52.89.214.238"})  # a TradingView sender


def inbox(client, key):
    return api(client, "GET", "/notifications?limit=100&type=WEBHOOK_ALERT", key).json


def test_api_creates_a_hook_whose_url_is_shown_once(app, client, key):
    hook = new_hook(client, key, "  TradingView   BTC ")
    assert hook["name"] == "TradingView BTC" and hook["last_used_at"] is None
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/hooks/tbh_[\w-]{43}", hook["url"])
    assert hook["prefix"] == hook_path(hook)[len("/hooks/"):][:10]
    listing = api(client, "GET", "/hooks", key)
    assert listing.status_code == 200
    assert listing.json == [{k: v for k, v in hook.items() if k != "url"}]
    assert hook_path(hook).split("/")[-1] not in listing.get_data(as_text=True)
    with app.app_context():  # only the hash is kept
        row = db.session.get(HookToken, hook["id"])
        assert hook["url"].split("/")[-1] not in (row.token_hash, row.prefix)


def test_api_revokes_a_hook_and_its_url_answers_404(client, key):
    hook = new_hook(client, key)
    assert post(client, hook, "before").status_code == 202
    assert api(client, "DELETE", f"/hooks/{hook['id']}", key).status_code == 204
    assert post(client, hook, "after").status_code == 404
    assert api(client, "DELETE", f"/hooks/{hook['id']}", key).status_code == 404
    assert api(client, "GET", "/hooks", key).json == []
    assert [n["message"] for n in inbox(client, key)] == ["before"]


def test_another_users_hook_is_404_and_stays_live(client, auth, key):
    auth.create("other@example.com")
    theirs = new_hook(client, auth.api_key("other@example.com"))
    assert api(client, "DELETE", f"/hooks/{theirs['id']}", key).status_code == 404
    assert api(client, "DELETE", "/hooks/99999", key).status_code == 404
    assert api(client, "DELETE", "/hooks/99999999999999999999", key).status_code == 404
    assert api(client, "GET", "/hooks", key).json == []
    assert post(client, theirs, "still here").status_code == 202
    assert inbox(client, key) == []  # their hook's alert is theirs alone


@pytest.mark.parametrize(("method", "path"), [("POST", "/hooks"), ("GET", "/hooks"),
                                              ("DELETE", "/hooks/1")])
def test_hooks_api_needs_a_key_or_session(client, method, path):
    response = client.open(f"/api/v1{path}", method=method, json={"name": "x"})
    assert response.status_code == 401 and response.json["error"] == "unauthorized"


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "   "}, {"name": "n" * 81},
                                  {"name": 5}, {"name": ["a"]}, {"name": None}, [], "x",
                                  {"name": "a\u0000b"}, {"name": "\u001b[31mred"},
                                  {"name": "ok", "zz": "x"}])
def test_api_refuses_bad_names_and_makes_nothing(client, key, body):
    response = api(client, "POST", "/hooks", key, data=json.dumps(body),
                   content_type="application/json")
    assert response.status_code == 422 and response.json["error"] == "invalid_input"
    assert api(client, "GET", "/hooks", key).json == []


def test_a_user_holds_at_most_max_hooks(client, key):
    for i in range(hooks.MAX_HOOKS):
        new_hook(client, key, f"hook {i}")
    response = api(client, "POST", "/hooks", key, json={"name": "one more"})
    assert response.status_code == 422 and "revoke one" in response.json["detail"]["name"]


def test_requests_racing_for_the_last_hook_get_one_between_them(app, client, key):
    """Twelve requests at once for the last free place: one hook, eleven refusals."""
    for i in range(hooks.MAX_HOOKS - 1):
        new_hook(client, key, f"hook {i}")
    start, answers = threading.Barrier(12), []

    def race(n):
        start.wait()
        answers.append(api(app.test_client(), "POST", "/hooks", key,
                           json={"name": f"racer {n}"}).status_code)

    racers = [threading.Thread(target=race, args=(n,)) for n in range(12)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(30)
    assert sorted(answers) == [201] + [422] * 11, answers
    assert len(api(client, "GET", "/hooks", key).json) == hooks.MAX_HOOKS


def test_a_session_caller_needs_csrf_to_create(client, auth):
    auth.create()
    auth.login()
    assert client.post("/api/v1/hooks", json={"name": "x"}).status_code == 400
    token = csrf_token(client, "/settings/hooks")
    response = client.post("/api/v1/hooks", json={"name": "x"}, headers={"X-CSRFToken": token})
    assert response.status_code == 201


def test_tradingview_text_body_reaches_the_inbox_once(client, key):
    hook = new_hook(client, key, "BTC 4h")
    response = post(client, hook, "BTCUSDT Crossing 65000.00")
    assert response.status_code == 202 and response.json["id"]
    [n] = inbox(client, key)
    assert n["id"] == response.json["id"] and n["type"] == "WEBHOOK_ALERT"
    assert (n["title"], n["message"], n["priority"], n["data"]) == (
        "BTC 4h", "BTCUSDT Crossing 65000.00", "normal", {})


@pytest.mark.parametrize("content_type", ["application/json", "text/plain; charset=utf-8",
                                          "application/x-www-form-urlencoded"])  # curl -d
def test_tradingview_json_body_reaches_the_inbox_once(client, key, content_type):
    hook = new_hook(client, key)
    response = post(client, hook, json.dumps(TV_JSON), content_type)
    assert response.status_code == 202
    [n] = inbox(client, key)
    assert (n["id"], n["type"], n["title"], n["message"], n["priority"]) == (
        response.json["id"], "WEBHOOK_ALERT", "BTC breakout", "BTCUSDT crossed 65000", "high")
    assert n["data"] == {"symbol": "BTCUSDT", "price": 65012.5, "strategy": "x", "type": "long"}
    assert (n["symbol"], n["current_price"]) == ("BTCUSDT", 65012.5)


def test_json_without_a_title_takes_the_hooks_name(client, key):
    hook = new_hook(client, key, "ETH grid")
    post(client, hook, '{"message": "ETH filled", "price": 3120}', "application/json")
    [n] = inbox(client, key)
    assert (n["title"], n["message"], n["data"]) == ("ETH grid", "ETH filled", {"price": 3120})


def test_text_that_only_looks_like_json_stays_text(client, key):
    hook = new_hook(client, key)
    assert post(client, hook, "{close} broke {high}").status_code == 202
    assert inbox(client, key)[0]["message"] == "{close} broke {high}"


def test_long_text_is_cut_to_the_inbox_limit(client, key):
    hook = new_hook(client, key)
    assert post(client, hook, "x" * 5000).status_code == 202
    message = inbox(client, key)[0]["message"]
    assert len(message) == 2000 and message.endswith("…")


def test_control_characters_are_dropped_from_the_text_not_the_alert(client, key):
    """A chart alert's sender cannot read our answer: its text is kept, without them."""
    hook = new_hook(client, key)
    assert post(client, hook, "BTC\u0000 up\u001b\n\tby 5%").status_code == 202
    assert post(client, hook, json.dumps({"title": "ETH\u0000", "message": "a\u0007b"}),
                "application/json").status_code == 202
    assert [(n["title"], n["message"]) for n in inbox(client, key)] == [
        ("ETH", "ab"), ("TradingView BTC", "BTC up\n\tby 5%")]


def test_an_identical_body_within_a_minute_makes_one_notification(client, key, r):
    hook = new_hook(client, key)
    first = post(client, hook, json.dumps(TV_JSON), "application/json")
    again = post(client, hook, json.dumps(TV_JSON), "application/json")
    assert first.status_code == again.status_code == 202
    assert again.json == {"id": first.json["id"], "duplicate": True}
    assert len(inbox(client, key)) == 1
    assert post(client, hook, json.dumps({**TV_JSON, "price": "65100"}),
                "application/json").json.get("duplicate") is None
    assert len(inbox(client, key)) == 2
    [seen] = r.keys(f"tb:hookseen:{hook['id']}:*")[:1]
    assert 0 < r.ttl(seen) <= 60  # the window: a minute


def test_the_same_body_to_two_hooks_is_two_notifications(client, key):
    one, two = new_hook(client, key, "one"), new_hook(client, key, "two")
    post(client, one, "same")
    post(client, two, "same")
    assert sorted(n["title"] for n in inbox(client, key)) == ["one", "two"]


def test_revoked_and_unknown_tokens_answer_the_same_404(client, key):
    hook = new_hook(client, key)
    api(client, "DELETE", f"/hooks/{hook['id']}", key)
    answers = [post(client, hook, "x"),
               post(client, {"url": "http://x/hooks/tbh_" + "A" * 43}, "x"),
               post(client, {"url": "http://x/hooks/" + "z" * 5000}, "x"),
               post(client, {"url": "http://x/hooks/%ED%A0%80"}, "x")]  # a surrogate's bytes
    for response in answers:
        assert response.status_code == 404
        assert (response.get_data(), response.headers["Content-Type"]) == (
            answers[0].get_data(), answers[0].headers["Content-Type"])
    assert answers[0].json == {"error": "not_found", "detail": "No such hook."}
    assert inbox(client, key) == []


def signed_up(app):
    """A client of `app` and a new user's API key."""
    client = app.test_client()
    auth = AuthActions(client, app)
    auth.create()
    return client, auth.api_key()


def test_a_hook_over_its_rate_answers_429_with_retry_after(make_app):
    client, key = signed_up(make_app(HOOK_RATE_PER_MINUTE=3))
    hook = new_hook(client, key)
    assert [post(client, hook, f"alert {i}").status_code for i in range(3)] == [202] * 3
    refused = post(client, hook, "alert 3")
    assert refused.status_code == 429 and refused.json["error"] == "too_many_requests"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert len(inbox(client, key)) == 3
    other = new_hook(client, key, "other")  # the limit is per hook
    assert post(client, other, "alert 3").status_code == 202


def test_a_huge_body_answers_413(client, key):
    hook = new_hook(client, key)
    assert post(client, hook, "y" * (hooks.MAX_BODY + 1)).status_code == 413
    assert post(client, hook, "y" * 20_000_000).status_code == 413
    assert post(client, hook, "y" * hooks.MAX_BODY).status_code == 202
    assert len(inbox(client, key)) == 1


def test_a_body_that_is_not_utf8_answers_400(client, key):
    hook = new_hook(client, key)
    response = post(client, hook, b"BTC \xff\xfe crossed")
    assert response.status_code == 400 and "UTF-8" in response.json["detail"]
    assert inbox(client, key) == []


@pytest.mark.parametrize(("body", "said"), [
    ('{"title": "x", ', "not a JSON object"), ('["a", "b"]', "not a JSON object"),
    ('"text"', "not a JSON object"), ("NaN", "NaN is not a number JSON can carry"),
    ('{"price": NaN}', "NaN is not a number JSON can carry"),
    ('{"price": 1e999}', "1e999 is too large a number"),
    ("[" * 100_00, "nested too deeply"), ('{"a":' * 1500 + "1" + "}" * 1500, "nested too deeply")])
def test_announced_json_that_is_no_object_answers_400(client, key, body, said):
    hook = new_hook(client, key)
    response = post(client, hook, body, "application/json")
    assert response.status_code == 400 and response.json["error"] == "bad_request"
    assert said in response.json["detail"]
    assert inbox(client, key) == []


@pytest.mark.parametrize(("body", "field"), [
    ({"priority": "urgent"}, "priority"), ({"priority": 3}, "priority"),
    ({"price": "abc"}, "price"), ({"price": "NaN"}, "price"), ({"price": "-inf"}, "price"),
    ({"price": True}, "price"), ({"price": [1]}, "price"), ({"title": 5}, "title"),
    ({"price": 10**400}, "price"), ({"price": -(10**400)}, "price"),
    ({"message": {"a": 1}}, "message"), ({"symbol": "S" * 65}, "symbol"),
    ({"symbol": 42}, "symbol"), ({"note": "n" * 9000}, "data"),
])
def test_bad_fields_answer_422_and_make_nothing(client, key, body, field):
    hook = new_hook(client, key)
    response = post(client, hook, json.dumps(body), "application/json")
    assert response.status_code == 422 and field in response.json["detail"]
    assert inbox(client, key) == []


@pytest.mark.parametrize("body", ["", "  \n ", "\x00\x01", " \x7f\x1b ", '{"title": "\\udc00 BTC"}',
                                  '{"tag": {"\\ud800": 1}}'])
def test_empty_bodies_and_lone_surrogates_answer_422(client, key, body):
    hook = new_hook(client, key)
    assert post(client, hook, body, "application/json").status_code == 422
    assert post(client, hook, body).status_code == 422
    assert inbox(client, key) == []


def test_a_script_in_the_title_is_text_and_escaped_on_the_inbox_page(client, auth, key):
    hook = new_hook(client, key)
    title = "<script>alert(1)</script> BTC"
    post(client, hook, json.dumps({"title": title, "message": "<img src=x onerror=alert(2)>"}),
         "application/json")
    assert inbox(client, key)[0]["title"] == title
    auth.login()
    page = client.get("/notifications/").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; BTC" in page
    assert "<script>alert(1)" not in page and "<img src=x" not in page


def test_the_receiver_needs_no_csrf_and_sets_no_cookie(client, auth, key):
    hook = new_hook(client, key)
    response = post(client, hook, "anonymous")
    assert response.status_code == 202 and "Set-Cookie" not in response.headers
    auth.login()  # a signed-in browser posting without a CSRF token is still a webhook
    assert post(client, hook, "signed in").status_code == 202


def test_a_hook_records_its_last_use_and_logs_who_sent_what(app, client, key, caplog):
    hook = new_hook(client, key)
    with caplog.at_level(logging.INFO, logger="webapp.hooks.service"):
        nid = post(client, hook, "BTC up").json["id"]
        post(client, {"url": "http://x/hooks/tbh_nope"}, "probe")
    accepted, refused = [r.getMessage() for r in caplog.records]
    assert f"hook={hook['id']} prefix={hook['prefix']}" in accepted
    assert "ip=52.89.214.238 bytes=6 status=202 outcome=accepted" in accepted
    assert accepted.endswith(f"notification_id={nid}")
    assert "hook=- prefix=- user_id=- ip=52.89.214.238" in refused and "status=404" in refused
    assert api(client, "GET", "/hooks", key).json[0]["last_used_at"]


def test_a_webhook_alert_is_emailed_under_its_label(make_app, smtp_server):
    app = make_app(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port, SMTP_TLS="none",
                   MAIL_FROM="Tickerbell <bell@tickerbell.test>")
    client, key = signed_up(app)
    hook = new_hook(client, key)
    post(client, hook, json.dumps(TV_JSON), "application/json")
    run_jobs(app)
    mails = smtp_server.wait_for(2)  # the API key's security notice is the other one
    [msg] = [m["msg"] for m in mails if m["msg"]["X-Tickerbell-Type"] == "WEBHOOK_ALERT"]
    assert msg["Subject"] == "Webhook alert: BTC breakout"
    assert "BTCUSDT crossed 65000" in msg.get_body(("plain",)).get_content()


def test_settings_page_creates_shows_the_url_once_and_revokes(client, auth):
    auth.create()
    auth.login()
    token = csrf_token(client, "/settings/hooks")
    created = client.post("/settings/hooks", data={"name": "TV <b>", "csrf_token": token})
    assert created.status_code == 303  # post, redirect, get: a reload makes no second hook
    page = client.get("/settings/hooks").get_data(as_text=True)
    url = re.search(r'id="new-hook-url">([^<]+)<', page).group(1)
    assert "TV &lt;b&gt;" in page and 'href="/settings/hooks"' in page  # the nav's link
    assert client.post(urlsplit(url).path, data="hello").status_code == 202
    listing = client.get("/settings/hooks").get_data(as_text=True)
    assert url not in listing and url.split("/")[-1][:10] in listing
    hook_id = re.search(r"/settings/hooks/(\d+)/revoke", listing).group(1)
    revoked = client.post(f"/settings/hooks/{hook_id}/revoke", data={"csrf_token": token})
    assert revoked.status_code == 303
    assert client.post(urlsplit(url).path, data="hello").status_code == 404
    assert "No hooks yet." in client.get("/settings/hooks").get_data(as_text=True)


def test_settings_page_answers_htmx_with_the_list_alone(client, auth):
    auth.create()
    auth.login()
    headers = {"HX-Request": "true", "X-CSRFToken": csrf_token(client, "/settings/hooks")}
    created = client.post("/settings/hooks", data={"name": "bot"}, headers=headers)
    fragment = created.get_data(as_text=True)
    assert created.status_code == 200 and fragment.startswith('<div id="hooks">')
    assert "/hooks/tbh_" in re.search(r'id="new-hook-url">([^<]+)<', fragment).group(1)
    assert "<html" not in fragment
    bad = client.post("/settings/hooks", data={"name": ""}, headers=headers)
    assert bad.status_code == 422 and "Name the hook." in bad.get_data(as_text=True)
    hook_id = re.search(r"/settings/hooks/(\d+)/revoke", fragment).group(1)
    gone = client.post(f"/settings/hooks/{hook_id}/revoke", headers=headers)
    assert gone.status_code == 200 and "No hooks yet." in gone.get_data(as_text=True)


def test_settings_page_cannot_revoke_another_users_hook(client, auth):
    auth.create("other@example.com")
    theirs = new_hook(client, auth.api_key("other@example.com"))
    auth.create()
    auth.login()
    token = csrf_token(client, "/settings/hooks")
    response = client.post(f"/settings/hooks/{theirs['id']}/revoke", data={"csrf_token": token})
    assert response.status_code == 404
    assert post(client, theirs, "still live").status_code == 202


def test_settings_page_needs_a_login_and_csrf(client, auth):
    assert client.get("/settings/hooks").status_code == 302
    auth.create()
    auth.login()
    assert client.post("/settings/hooks", data={"name": "x"}).status_code == 400


def test_redis_down_answers_a_json_503_and_makes_nothing(make_app, refused_port):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{refused_port}/0")  # nothing listens there
    with app.app_context():
        user = accounts.create_user("down@example.com", "correct horse")
        _, url = hooks.create(user.id, "TradingView")
    response = app.test_client().post(urlsplit(url).path, data=b"BTCUSDT crossed 65000",
                                      headers={"Content-Type": "text/plain"})
    assert response.status_code == 503 and response.is_json
    assert response.json["error"] and "Retry-After" in response.headers
