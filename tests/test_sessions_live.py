"""Ending a session or revoking a key closes its live streams, under gunicorn's gevent worker."""

import json
import re
import time

import pytest
import requests
import websocket
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright

from tests.hub import poll
from tests.live_server import cookie_header, launch_chromium, login, skip_without_chromium
from tests.sse_helpers import open_stream
from webapp.accounts import service as accounts
from webapp.extensions import db
from webapp.inbox import service as inbox

EMAIL, PASSWORD = "live@example.com", "correct horse"


@pytest.fixture(scope="module")
def site(make_live_site):
    live = make_live_site("sessions", env={"STREAM_KEEPALIVE_S": "60"})
    return {"app": live.app, "server": live.server, "uid": live.user(EMAIL, PASSWORD)}


def post_form(site, session, path, **data):
    """POST a form as the page would: with the CSRF token its page carries."""
    page = session.get(site["server"].url + "/settings/password").text
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    return session.post(site["server"].url + path, data={"csrf_token": token, **data},
                        allow_redirects=False)


def stream_of(site, session):
    sock, reader = open_stream(site["server"].port, cookie_header(session))
    reader.until(lambda events: any(e.get("event") == "unread" for e in events))
    return sock, reader


def ended(reader):
    with pytest.raises(ConnectionError):  # the server closes it; the wait is bounded
        reader.until(lambda events: False, timeout=10)
    return True


def delivered(site, reader):
    with site["app"].app_context():
        _, eid = inbox.store({"user_id": site["uid"], "type": "PRICE_ALERT",
                              "title": "still live", "message": "m"})
    reader.until(lambda events: any(e.get("id") == eid for e in events))
    return True


@pytest.fixture
def browsers(site):
    """Logged-in requests sessions, each its own login; closed after the test."""
    made = []

    def make():
        made.append(login(site["server"].url, EMAIL, PASSWORD))
        return made[-1]

    yield make
    for session in made:
        session.close()


def test_logout_closes_that_sessions_streams_and_no_other(site, browsers):
    leaving, staying = browsers(), browsers()
    sockets = []
    try:
        sock, reader = stream_of(site, leaving)
        other_sock, other = stream_of(site, staying)
        sockets += [sock, other_sock]
        assert post_form(site, leaving, "/auth/logout").status_code == 302
        assert ended(reader)
        assert delivered(site, other)
    finally:
        for sock in sockets:
            sock.close()


def test_log_out_everywhere_closes_every_stream_of_the_user(site, browsers):
    here, there = browsers(), browsers()
    sockets = []
    try:
        opened = [stream_of(site, session) for session in (here, here, there)]
        sockets += [sock for sock, _ in opened]
        assert post_form(site, here, "/settings/sessions/end-all").status_code == 302
        for _, reader in opened:
            assert ended(reader)
        refused = requests.get(site["server"].url + "/stream", timeout=5,
                               headers={"Cookie": cookie_header(there)})
        assert refused.status_code == 401
    finally:
        for sock in sockets:
            sock.close()


def ws_closed(ws, timeout=10.0):
    """True once the server closes the WebSocket; fails if it is still open after the wait."""
    deadline = time.monotonic() + timeout
    ws.settimeout(timeout)
    try:
        while ws.recv():  # a close frame reads as ""
            assert time.monotonic() < deadline, "still open"
    except websocket.WebSocketConnectionClosedException:
        pass
    ws.shutdown()  # after the server's close frame, close() leaves the socket open
    return True


def ws_until_unread(ws):
    ws.settimeout(10)
    while json.loads(ws.recv())["event"] != "unread":
        pass


def test_revoking_an_api_key_closes_its_websockets_and_no_others(site, browsers):
    with site["app"].app_context():
        user = db.session.get(accounts.User, site["uid"])
        (revoked_id, revoked), (_, kept) = (
            (key.id, secret) for key, secret in (accounts.create_api_key(user, name)
                                                 for name in ("old", "new")))
        db.session.remove()
    url = f"ws://127.0.0.1:{site['server'].port}/ws?api_key="
    old_ws = websocket.create_connection(url + revoked, timeout=10)
    new_ws = websocket.create_connection(url + kept, timeout=10)
    try:
        ws_until_unread(old_ws)
        ws_until_unread(new_ws)
        response = post_form(site, browsers(), f"/settings/api-keys/{revoked_id}/revoke")
        assert response.status_code == 302
        assert ws_closed(old_ws)
        with site["app"].app_context():
            nid, _ = inbox.store({"user_id": site["uid"], "type": "PRICE_ALERT",
                                  "title": "to the kept key", "message": "m"})
        seen = []  # the security notice of the revocation comes first
        while nid not in seen:
            message = json.loads(new_ws.recv())
            if message["event"] == "notification":
                seen.append(message["data"]["id"])
    finally:
        old_ws.close()
        new_ws.close()


def streams_open(site):
    return requests.get(site["server"].url + "/api/v1/health", timeout=5).json()["streams"]


def signed_in_tab(chromium, site):
    """A tab of a new browser context, signed in through the login form, on the dashboard."""
    tab = chromium.new_context().new_page()
    tab.goto(site["server"].url + "/auth/login")
    tab.fill("#email", EMAIL)
    tab.fill("#password", PASSWORD)
    tab.click("button[type=submit]")
    tab.wait_for_url("**/dashboard")
    return tab


@pytest.mark.browser
def test_a_tab_whose_session_ended_elsewhere_loses_its_feed_and_goes_to_login(site, browsers):
    skip_without_chromium()
    with sync_playwright() as p:
        chromium = launch_chromium(p)
        try:
            tab = signed_in_tab(chromium, site)
            assert poll(lambda: streams_open(site) == 1)
            assert post_form(site, browsers(), "/settings/sessions/end-all").status_code == 302
            assert poll(lambda: streams_open(site) == 0)
            try:  # the banner's poll, sooner; the page may already be leaving by itself
                tab.evaluate("htmx.ajax('GET', '/status', '#status-banner')")
            except PlaywrightError as exc:
                if "Execution context was destroyed" not in str(exc):
                    raise
            tab.wait_for_url("**/auth/login?next=%2Fdashboard")
            expect(tab.locator("#flashes")).to_contain_text("Please log in")
        finally:
            chromium.close()


@pytest.mark.browser
def test_the_banners_failing_poll_is_said_once_in_the_banner_until_it_answers(site):
    """While Redis is away the banner's poll answers 503 (every signed-in request needs
    Redis): said in the banner, not as a new error box every 15 s, and gone once it answers."""
    skip_without_chromium()
    with sync_playwright() as p:
        chromium = launch_chromium(p)
        try:
            tab = signed_in_tab(chromium, site)
            tab.route("**/status", lambda route: route.fulfill(
                status=503, content_type="application/json",
                body='{"error": "service_unavailable", "detail": "The store is away."}'))
            for _ in range(3):  # three polls
                tab.evaluate("htmx.ajax('GET', '/status', '#status-banner')")
            expect(tab.locator("#status-banner")).to_contain_text("cannot reach its data store")
            expect(tab.locator("#status-banner p")).to_have_count(1)
            expect(tab.locator("#flashes .flash-error")).to_have_count(0)
            tab.unroute("**/status")
            tab.evaluate("htmx.ajax('GET', '/status', '#status-banner')")
            expect(tab.locator("#status-banner")).not_to_contain_text("data store")
        finally:
            chromium.close()
