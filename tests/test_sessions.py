"""Server-side sessions: logging out, a password change and "log out everywhere" end them."""

import pytest
from flask_login.utils import encode_cookie

from tests.conftest import AuthActions, csrf_token
from tests.sse_helpers import EventReader
from webapp.extensions import get_redis
from webapp.inbox import service as inbox

pytestmark = pytest.mark.both_databases


@pytest.fixture
def app(make_app):
    app = make_app()
    yield app
    hub = app.extensions.get("fanout")
    if hub is not None:
        hub.stop()


def browser(app, email="trader@example.com", **form):
    """A test client logged in through the form: one browser, one session."""
    client = app.test_client()
    token = csrf_token(client)
    response = client.post("/auth/login", data={
        "email": email, "password": "correct horse", "csrf_token": token, **form})
    assert response.status_code == 302
    return client


def copy_of(app, client):
    """Another client holding a copy of `client`'s session cookie, as a thief would."""
    thief = app.test_client()
    thief.set_cookie("session", client.get_cookie("session").value)
    return thief


def opens(client):
    """What the session opens: (dashboard, API, live stream) status codes."""
    stream = client.get("/stream", buffered=False)
    stream.close()
    return (client.get("/dashboard").status_code, client.get("/api/v1/me").status_code,
            stream.status_code)


def live_stream(client):
    response = client.get("/stream", buffered=False)
    assert response.status_code == 200
    reader = EventReader(response.response)
    reader.until(lambda events: any(e.get("event") == "unread" for e in events))
    return response, reader


def ended(reader):
    """True once the server ends the stream; fails if it is still open after the wait."""
    with pytest.raises(ConnectionError):
        reader.until(lambda events: False, timeout=10)
    return True


def still_delivers(app, uid, reader):
    with app.app_context():
        _, eid = inbox.store({"user_id": uid, "type": "PRICE_ALERT", "title": "still here",
                              "message": "m"})
    reader.until(lambda events: any(e.get("id") == eid for e in events))
    return True


def post(client, path):
    return client.post(path, data={"csrf_token": csrf_token(client, "/settings/password")})


def test_a_cookie_copied_before_logout_opens_nothing_after(app, auth):
    auth.create()
    client = browser(app)
    thief = copy_of(app, client)
    assert opens(thief) == (200, 200, 200)
    post(client, "/auth/logout")
    assert opens(thief) == (302, 401, 401)
    assert opens(client) == (302, 401, 401)


def test_a_stream_opened_before_logout_ends_and_other_sessions_stay(app, auth):
    uid = auth.create()
    leaving, staying = browser(app), browser(app)
    response, reader = live_stream(leaving)
    other, other_reader = live_stream(staying)
    post(leaving, "/auth/logout")
    assert ended(reader)
    assert still_delivers(app, uid, other_reader)
    assert staying.get("/dashboard").status_code == 200
    response.close()
    other.close()


def test_logging_in_again_ends_the_browsers_previous_session(app, auth):
    auth.create()
    client = browser(app)
    thief = copy_of(app, client)
    AuthActions(client, app).login()
    assert opens(client)[0] == 200
    assert opens(thief) == (302, 401, 401)


def test_password_change_ends_other_sessions_and_their_streams_but_not_this_one(app, auth):
    uid = auth.create()
    changing, other = browser(app), browser(app)
    mine, my_reader = live_stream(changing)
    theirs, their_reader = live_stream(other)
    token = csrf_token(changing, "/settings/password")
    assert changing.post("/settings/password", data={
        "current_password": "correct horse", "new_password": "battery staple",
        "confirm": "battery staple", "csrf_token": token}).status_code == 302
    assert ended(their_reader)
    assert opens(other) == (302, 401, 401)
    assert still_delivers(app, uid, my_reader)
    assert changing.get("/dashboard").status_code == 200
    mine.close()
    theirs.close()


def test_log_out_everywhere_ends_every_session_and_stream_but_keeps_api_keys(app, auth):
    auth.create()
    key = auth.api_key()
    here, elsewhere = browser(app), browser(app)
    page = here.get("/settings/password").get_data(as_text=True)
    assert 'id="session-count">2<' in page and "Log out everywhere" in page
    response, reader = live_stream(elsewhere)
    assert here.post("/settings/sessions/end-all").status_code == 400  # no CSRF token
    assert opens(here)[0] == 200
    done = post(here, "/settings/sessions/end-all")
    assert done.status_code == 302 and done.headers["Location"] == "/auth/login"
    assert ended(reader)
    assert opens(here) == (302, 401, 401)
    assert opens(elsewhere) == (302, 401, 401)
    assert here.get("/api/v1/me", headers={"X-API-Key": key}).status_code == 200
    response.close()


def test_a_session_from_before_server_side_sessions_counts_as_logged_out(app, auth):
    uid = auth.create()
    old = app.test_client()
    with old.session_transaction() as session:  # what a login wrote before the upgrade
        session["_user_id"], session["_fresh"] = f"{uid}:1", True
    assert opens(old) == (302, 401, 401)
    remembered = app.test_client()  # flask-login's old "remember me" cookie alone
    with app.test_request_context():
        remembered.set_cookie("remember_token", encode_cookie(f"{uid}:1"))
    assert opens(remembered) == (302, 401, 401)


@pytest.mark.parametrize(("remember", "lasting"), [("y", True), ("", False)])
def test_keep_me_signed_in_makes_a_lasting_session(app, auth, remember, lasting):
    auth.create()
    client = app.test_client()
    token = csrf_token(client)
    response = client.post("/auth/login", data={
        "email": "trader@example.com", "password": "correct horse", "remember": remember,
        "csrf_token": token})
    cookie = response.headers["Set-Cookie"]
    assert ("Expires=" in cookie) is lasting
    with app.app_context():
        [key] = get_redis().keys("tb:session:*")
        ttl = get_redis().ttl(key)
    assert (ttl > 24 * 3600) is lasting and ttl > 0
    assert client.get("/dashboard").status_code == 200


def test_an_htmx_request_of_an_ended_session_takes_the_whole_tab_to_login(app, auth):
    auth.create()
    client = browser(app)
    stale_tab = copy_of(app, client)
    post(client, "/auth/logout")
    response = stale_tab.get("/status", headers={
        "HX-Request": "true", "HX-Current-URL": "http://localhost/alerts/?x=1"})
    assert response.status_code == 401 and response.data == b""  # nothing to swap in
    assert response.headers["HX-Redirect"] == "/auth/login?next=%2Falerts%2F%3Fx%3D1"
    assert stale_tab.get("/status").headers["Location"] == "/auth/login?next=%2Fstatus"
