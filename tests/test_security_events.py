"""Account security events the app raises itself, delivered by email to a real SMTP server."""

import re

import pytest

from tests.conftest import csrf_token
from tests.hub import run_jobs
from webapp.extensions import db
from webapp.inbox import service as inbox
from webapp.models import CriticalNotification

pytestmark = pytest.mark.both_databases


@pytest.fixture
def app(make_app, smtp_server):
    return make_app(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port, SMTP_TLS="none")


def titles(app, uid):
    with app.app_context():
        items = inbox.list_page(uid, limit=50)[0]
    assert {n["type"] for n in items} <= {"ACCOUNT_SECURITY"}
    return [n["title"] for n in reversed(items)]


def login_as(client, browser, password="correct horse"):
    token = csrf_token(client)
    return client.post("/auth/login", headers={"User-Agent": browser}, data={
        "email": "trader@example.com", "password": password, "csrf_token": token})


def test_login_from_a_new_device_is_reported_by_email(app, client, auth, smtp_server):
    uid = auth.create()
    assert login_as(client, "Firefox/1 on Linux").status_code == 302
    assert titles(app, uid) == []  # the first device is simply remembered
    auth.logout()
    login_as(client, "Firefox/1 on Linux")
    auth.logout()
    assert titles(app, uid) == []
    login_as(client, "Safari/17 on iPhone")
    assert titles(app, uid) == ["New sign-in to your account"]
    run_jobs(app)
    [mail] = smtp_server.wait_for(1)
    msg = mail["msg"]
    assert mail["rcpt"] == ["trader@example.com"]
    assert msg["Subject"] == "[Critical] Account security: New sign-in to your account"
    assert msg["X-Tickerbell-Type"] == "ACCOUNT_SECURITY"
    assert "Safari/17 on iPhone" in msg.get_body(("plain",)).get_content()
    assert "Safari/17 on iPhone" in msg.get_body(("html",)).get_content()
    with app.app_context():
        assert db.session.scalar(db.select(CriticalNotification.title)) == (
            "New sign-in to your account")


def test_password_change_and_api_keys_are_reported(app, client, auth):
    uid = auth.create()
    auth.login()
    token = csrf_token(client, "/settings/api-keys")
    client.post("/settings/api-keys", data={"name": "bot", "csrf_token": token})
    listing = client.get("/settings/api-keys").get_data(as_text=True)
    revoke = re.search(r"/settings/api-keys/\d+/revoke", listing).group(0)
    assert client.post(revoke, data={"csrf_token": token}).status_code == 302
    client.post("/settings/password", data={
        "current_password": "correct horse", "new_password": "battery staple",
        "confirm": "battery staple", "csrf_token": token})
    assert titles(app, uid) == ["API key created: bot", "API key revoked: bot",
                                "Your password was changed"]


def test_repeated_failed_logins_are_reported_once(app, client, auth):
    uid = auth.create()
    for _ in range(4):
        assert login_as(client, "curl/8", password="wrong guess").status_code == 422
    assert titles(app, uid) == ["Repeated failed sign-ins"]


def sign_up(client, email):
    token = csrf_token(client, "/auth/register")
    return client.post("/auth/register", data={
        "email": email, "password": "someone else", "confirm": "someone else",
        "csrf_token": token})


def test_sign_up_with_a_taken_email_tells_the_owner_once_by_email(app, client, auth,
                                                                   smtp_server):
    uid = auth.create()
    for _ in range(3):
        assert sign_up(client, "Trader@Example.com").status_code == 302
    assert titles(app, uid) == ["Someone tried to sign up with your email"]  # once an hour
    run_jobs(app)
    [mail] = smtp_server.wait_for(1)
    assert mail["rcpt"] == ["trader@example.com"]
    assert "log in with your existing password" in mail["msg"].get_body(("plain",)).get_content()


def test_a_new_sign_up_raises_no_notice(app, client, auth):
    uid = auth.create()
    assert sign_up(client, "newcomer@example.com").status_code == 302
    assert titles(app, uid) == []
