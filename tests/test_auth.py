import re
import threading

import pytest

from tests.conftest import AuthActions, csrf_token
from webapp.extensions import db
from webapp.models import User

pytestmark = pytest.mark.both_databases


def sign_up(client, email, password="longenough"):
    token = csrf_token(client, "/auth/register")
    return client.post("/auth/register", data={
        "email": email, "password": password, "confirm": password, "csrf_token": token})


def test_register_creates_the_account_and_asks_to_log_in(client, auth):
    response = sign_up(client, "New@Example.com")
    assert response.status_code == 302 and response.headers["Location"] == "/auth/login"
    page = client.get("/auth/login").get_data(as_text=True)
    assert "If new@example.com is new to Tickerbell, your account is ready: log in" in page
    assert client.get("/dashboard").status_code == 302  # not signed in by signing up
    assert auth.login("new@example.com", "longenough").status_code == 302
    assert b"new@example.com" in client.get("/dashboard").data


def test_register_answers_a_taken_email_exactly_as_a_new_one(app, auth):
    auth.create("taken@example.com", "original password")
    answers = []
    for email in ("taken@example.com", "fresh@example.com"):
        client = app.test_client()
        response = sign_up(client, email, "attacker's guess")
        page = client.get("/auth/login").get_data(as_text=True)
        # the token of this very page: a second fetch may be signed in the next second
        token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
        answers.append((response.status_code, response.headers["Location"],
                        page.replace(email, "EMAIL").replace(token, "TOKEN")))
    assert answers[0] == answers[1]
    assert "already exists" not in answers[0][2]
    assert auth.login("taken@example.com", "attacker's guess").status_code == 422
    assert auth.login("taken@example.com", "original password").status_code == 302


def test_login_and_logout(client, auth):
    auth.create()
    assert auth.login().headers["Location"] == "/dashboard"
    assert client.get("/dashboard").status_code == 200
    auth.logout()
    response = client.get("/dashboard")
    assert response.status_code == 302
    assert "/auth/login" in response.headers["Location"]


def test_wrong_password_is_refused(client, auth):
    auth.create()
    response = auth.login(password="wrong password")
    assert response.status_code == 422
    assert b"Wrong email or password" in response.data
    assert client.get("/dashboard").status_code == 302


def test_change_password_requires_current_and_ends_other_sessions(app, client, auth):
    auth.create()
    auth.login()
    other = app.test_client()
    AuthActions(other, app).login()
    token = csrf_token(client, "/settings/password")
    wrong = client.post("/settings/password", data={
        "current_password": "not it", "new_password": "brand new pw", "confirm": "brand new pw",
        "csrf_token": token})
    assert wrong.status_code == 422
    assert b"not your current password" in wrong.data
    ok = client.post("/settings/password", data={
        "current_password": "correct horse", "new_password": "brand new pw",
        "confirm": "brand new pw", "csrf_token": token})
    assert ok.status_code == 302 and ok.headers["Location"] == "/settings/password"
    assert client.get("/dashboard").status_code == 200
    assert other.get("/dashboard").status_code == 302
    auth.logout()
    assert auth.login(password="correct horse").status_code == 422
    assert auth.login(password="brand new pw").status_code == 302


def test_failed_logins_are_throttled_per_account(client, auth):
    auth.create()
    for _ in range(5):
        assert auth.login(password="wrong password").status_code == 422
    response = auth.login()  # even the right password waits
    assert response.status_code == 429
    assert b"Too many failed attempts" in response.data


def test_failed_logins_are_throttled_per_ip(client, auth):
    for n in range(5):
        auth.login(email=f"nobody{n}@example.com", password="whatever1")
    assert auth.login(email="someone@example.com", password="whatever1").status_code == 429


def test_an_address_over_its_limit_locks_no_account_out(app, client, auth):
    """Its refused requests count against no account: the owner, elsewhere, signs in."""
    auth.create()
    for n in range(5):
        auth.login(email=f"nobody{n}@example.com", password="whatever1")
    for _ in range(6):  # refused at the address: not a try at the account
        assert auth.login(password="wrong password").status_code == 429
    owner = app.test_client()
    answer = owner.post("/auth/login", data={
        "email": "trader@example.com", "password": "correct horse",
        "csrf_token": csrf_token(owner)}, environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert answer.status_code == 302


def test_a_burst_of_logins_at_once_gets_no_more_password_checks_than_the_limit(app, auth):
    """Twenty wrong passwords and the right one sent together: at most five are checked
    (422, or 302 for the right one), the rest wait (429). (Fewer when the account's count
    and the address's are taken in another order by two requests: both must be in bounds.)"""
    auth.create()
    clients = [app.test_client() for _ in range(21)]
    tokens = [csrf_token(c) for c in clients]
    start, answers = threading.Barrier(len(clients)), [None] * len(clients)

    def attempt(i):
        password = "correct horse" if i == 20 else "wrong password"
        start.wait(10)
        answers[i] = clients[i].post("/auth/login", data={
            "email": "trader@example.com", "password": password,
            "csrf_token": tokens[i]}).status_code

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    checked = answers.count(422) + answers.count(302)
    assert 1 <= checked <= 5 and answers.count(429) == 21 - checked, answers


def test_form_without_csrf_token_is_rejected(client, auth):
    auth.create()
    response = client.post("/auth/login", data={"email": "trader@example.com",
                                                "password": "correct horse"})
    assert response.status_code == 400
    assert client.get("/dashboard").status_code == 302


def test_htmx_request_needs_csrf_header(client, auth):
    auth.create()
    auth.login()
    headers = {"HX-Request": "true"}
    assert client.post("/auth/logout", headers=headers).status_code == 400
    token = csrf_token(client, "/dashboard")
    response = client.post("/auth/logout", headers={**headers, "X-CSRFToken": token})
    assert response.status_code == 302


@pytest.mark.parametrize("target", [
    "https://evil.example.com/", "//evil.example.com", "/\\evil.example.com",
    "javascript:alert(1)", "http:/evil.example.com", "/\r\nLocation: https://evil.example.com",
])
def test_login_never_redirects_off_site(client, auth, target):
    auth.create()
    token = csrf_token(client)
    response = client.post("/auth/login", data={
        "email": "trader@example.com", "password": "correct horse", "next": target,
        "csrf_token": token})
    assert response.headers["Location"] == "/dashboard"


def test_login_follows_a_local_next(client, auth):
    auth.create()
    token = csrf_token(client)
    response = client.post("/auth/login", data={
        "email": "trader@example.com", "password": "correct horse",
        "next": "/settings/api-keys", "csrf_token": token})
    assert response.headers["Location"] == "/settings/api-keys"


def test_log_out_from_a_tab_whose_session_already_ended_just_signs_out(client, auth):
    """Two tabs: the first logs out, then the second's Log out. Its login page must not send
    the user on to GET /auth/logout (a 405) once they sign in again."""
    auth.create()
    auth.login()
    token = csrf_token(client, "/dashboard")
    assert client.post("/auth/logout", data={"csrf_token": token}).status_code == 302
    stale = client.post("/auth/logout", data={"csrf_token": token})
    assert stale.status_code == 302 and stale.headers["Location"] == "/auth/login"
    assert b"You are signed out." in client.get("/auth/login").data


def test_a_form_posted_signed_out_comes_back_to_its_page_after_login(client, auth):
    auth.create()
    token = csrf_token(client)
    response = client.post("/settings/api-keys/1/revoke", data={"csrf_token": token},
                           headers={"Referer": "http://localhost/settings/api-keys"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/auth/login?next=%2Fsettings%2Fapi-keys"
    elsewhere = client.post("/settings/api-keys/1/revoke", data={"csrf_token": token},
                            headers={"Referer": "https://evil.example/settings/api-keys"})
    assert elsewhere.headers["Location"] == "/auth/login"  # another site's page is no way back


def test_session_cookie_is_httponly_and_lax(client, auth):
    auth.create()
    cookie = auth.login().headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie


BAD_REGISTRATIONS = [
    ({"email": "", "password": "longenough", "confirm": "longenough"}, b"Enter your email"),
    ({"email": "not-an-email", "password": "longenough", "confirm": "longenough"},
     b"valid email"),
    ({"email": "x" * 10_000 + "@example.com", "password": "longenough", "confirm": "longenough"},
     b"longer than 254"),
    ({"email": "a@example.com", "password": "short", "confirm": "short"},
     b"Use 8 to 128 characters."),
    ({"email": "a@example.com", "password": "p" * 10_000, "confirm": "p" * 10_000},
     b"Use 8 to 128 characters."),
    ({"email": "a@example.com", "password": "longenough", "confirm": "different"},
     b"do not match"),
    ({"email": "<script>alert(1)</script>@example.com", "password": "longenough",
      "confirm": "longenough"}, b"valid email"),
]


@pytest.mark.parametrize(("form", "message"), BAD_REGISTRATIONS)
def test_register_rejects_bad_input(client, form, message):
    response = client.post("/auth/register",
                           data={**form, "csrf_token": csrf_token(client, "/auth/register")})
    assert response.status_code == 422
    assert message in response.data
    assert b"<script>alert(1)" not in response.data


@pytest.mark.parametrize("path", ["/auth/register", "/settings/password"])
def test_a_new_passwords_boxes_both_take_any_length(client, auth, path):
    """A browser cuts a pasted password at maxlength: cut in one box and not the other, the
    page says they do not match instead of "Use 8 to 128 characters"."""
    if path != "/auth/register":
        auth.create()
        auth.login()
    page = client.get(path).get_data(as_text=True)
    boxes = re.findall(r"<input[^>]*type=\"password\"[^>]*>", page)
    new = [box for box in boxes if 'autocomplete="new-password"' in box]
    assert len(new) == 2 and not any("maxlength" in box for box in new), new


def test_register_accepts_a_unicode_password(client, auth):
    assert sign_up(client, "ünï@example.com", "пароль-密码-🔔").status_code == 302
    assert auth.login(email="ünï@example.com", password="пароль-密码-🔔").status_code == 302


@pytest.mark.parametrize("form", [
    {"email": "", "password": ""},
    {"email": "trader@example.com", "password": "x" * 10_000},
    {"email": "<script>@example.com", "password": "correct horse"},
])
def test_login_rejects_bad_input(client, form):
    response = client.post("/auth/login", data={**form, "csrf_token": csrf_token(client)})
    assert response.status_code == 422
    assert b"<script>@" not in response.data


def test_pages_have_404_and_escape_paths(client):
    response = client.get("/no/such/<script>")
    assert response.status_code == 404
    assert b"Page not found" in response.data


@pytest.mark.parametrize("raw", [b"a%FF@example.com", b"a%ED%A0%80@example.com"])
@pytest.mark.parametrize("headers", [{}, {"HX-Request": "true"}])
def test_form_bytes_that_are_no_utf8_are_refused_and_nothing_is_made(app, client, raw, headers):
    """A stray byte or a lone surrogate's UTF-8 in a form: Werkzeug keeps them as "%ff"
    text, and an account was made for "a%ff@example.com"."""
    token = csrf_token(client, "/auth/register").encode()
    body = (b"email=" + raw + b"&password=longenough&confirm=longenough&csrf_token=" + token)
    response = client.post("/auth/register", data=body, headers=headers,
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 422
    assert b"valid Unicode (UTF-8)" in response.data
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(User.id))) == 0
    ok = b"email=a%C3%BC%40example.com&password=longenough&confirm=longenough&csrf_token="
    assert client.post("/auth/register", data=ok + token,
                       content_type="application/x-www-form-urlencoded").status_code == 302
