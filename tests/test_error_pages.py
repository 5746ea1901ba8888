"""An unhandled error in a view: the styled 500 page for a browser, JSON for the API, the
traceback in the log and never in the answer."""

import logging
import re

import pytest
import redis
from sqlalchemy.exc import IntegrityError

from webapp.extensions import db
from webapp.models import ServiceToken

pytestmark = pytest.mark.both_databases

SECRET = "sk_live_do_not_show"  # stands for whatever an exception's text may carry


def fail():
    raise RuntimeError(f"lost the ledger: {SECRET}")


def fail_in_sql():
    """An IntegrityError mid-transaction: PostgreSQL then refuses every statement until a
    rollback, the 500 page's own included."""
    db.session.add_all([ServiceToken(name="twin", prefix="p", token_hash="a"),
                        ServiceToken(name="twin", prefix="p", token_hash="b")])
    db.session.flush()


@pytest.fixture
def app(make_app):
    """The app as production runs it (exceptions not propagated), with views that fail."""
    app = make_app(TESTING=False)
    app.add_url_rule("/boom", "boom", fail)
    app.add_url_rule("/api/v1/boom", "api_boom", fail)
    app.add_url_rule("/boom/sql", "boom_sql", fail_in_sql)
    return app


@pytest.fixture
def logged(caplog):
    caplog.set_level(logging.ERROR, logger="webapp.errors")
    return caplog


def assert_logged_once(logged, exc_type):
    [record] = [r for r in logged.records if r.name == "webapp.errors"]
    assert record.getMessage() == "unhandled error" and record.exc_info[0] is exc_type


def assert_nothing_leaked(body):
    for leak in (SECRET, "Traceback", "RuntimeError", "IntegrityError", "ledger", 'File "'):
        assert leak not in body


@pytest.mark.parametrize("logged_in", [False, True])
def test_a_browser_gets_the_styled_500_page_and_the_error_is_logged(client, auth, logged,
                                                                    logged_in):
    if logged_in:
        auth.create()
        auth.login()
    response = client.get("/boom", headers={"Accept": "text/html"})
    assert response.status_code == 500
    assert response.mimetype == "text/html"
    body = response.get_data(as_text=True)
    assert "<h1>Something went wrong</h1>" in body
    assert 'rel="stylesheet"' in body  # the site's layout, not a bare server error
    assert ("Log out" in body) is logged_in or ("/auth/logout" in body) is logged_in
    assert_nothing_leaked(body)
    assert_logged_once(logged, RuntimeError)


def test_the_api_answers_json_500_without_the_detail(client, auth, logged):
    auth.create()
    response = client.get("/api/v1/boom", headers={"X-API-Key": auth.api_key()})
    assert response.status_code == 500
    assert response.json == {"error": "internal_error",
                              "detail": "Something went wrong on our side."}
    assert_nothing_leaked(response.get_data(as_text=True))
    assert_logged_once(logged, RuntimeError)


def test_a_client_asking_for_json_gets_json_on_a_page_url(client, logged):
    response = client.get("/boom", headers={"Accept": "application/json"})
    assert response.status_code == 500 and response.json["error"] == "internal_error"


def test_a_failed_transaction_still_gets_the_styled_page_for_a_logged_in_user(client, auth,
                                                                             logged):
    auth.create()
    auth.login()
    response = client.get("/boom/sql")
    assert response.status_code == 500
    body = response.get_data(as_text=True)
    assert "<h1>Something went wrong</h1>" in body and 'rel="stylesheet"' in body
    assert_nothing_leaked(body)
    assert_logged_once(logged, IntegrityError)
    assert client.get("/dashboard").status_code == 200  # the next request is served as usual


def test_a_signed_in_browser_meets_a_redis_outage_without_a_500(client, auth, app,
                                                                 refused_port):
    """Redis holds the sessions: a missing page's layout, which loads the user, met the
    outage inside the error handler (a bare 500). The fallback page passes for a page
    (language, title), and the live feed asks the browser to come back in 2-6 s rather than
    closing on a 503 (htmx's SSE extension would then wait up to 64 s)."""
    auth.create()
    auth.login()
    gone = redis.Redis(port=refused_port, retry=None)  # refused at once, not retried
    app.extensions["redis"] = app.extensions["sessions_redis"] = gone
    for path in ("/nope", "/favicon.ico", "/dashboard"):
        page = client.get(path)
        assert page.status_code == 503 and page.headers["Retry-After"], path
        assert '<html lang="en">' in page.get_data(as_text=True), path
    live = client.get("/stream")
    assert live.status_code == 200 and live.mimetype == "text/event-stream"
    assert 2000 <= int(re.fullmatch(r"retry: (\d+)\n\n", live.get_data(as_text=True))[1]) <= 6000
    banner = client.get("/status", headers={"HX-Request": "true"})
    assert banner.status_code == 503  # the page's own script says it in the banner
