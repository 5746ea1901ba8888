"""The destinations settings page without a browser: HTMX partial or whole page, CSRF,
ownership, escaping."""

import re

import pytest

from tests.conftest import csrf_token
from webapp.extensions import db
from webapp.models import Destination

PAGE = "/settings/destinations/"
HOOK = {"kind": "webhook", "name": "desk <script>x</script>",
        "url": "https://93.184.215.14/hook/t0ken"}
HTMX = {"HX-Request": "true"}


@pytest.fixture
def token(client, auth):
    auth.create()
    auth.login()
    return csrf_token(client, PAGE)


def count(app):
    with app.app_context():
        return db.session.scalar(db.select(db.func.count(Destination.id)))


def test_signed_out_visitors_are_sent_to_log_in(app, client):
    assert client.get(PAGE).status_code == 302
    assert client.post(PAGE, data=HOOK).status_code == 400  # no CSRF token: refused first
    added = client.post(PAGE, data={**HOOK, "csrf_token": csrf_token(client)})
    assert added.status_code == 302 and added.location.startswith("/auth/login")
    assert count(app) == 0


def test_htmx_add_answers_the_panel_with_the_secret_once(client, token):
    added = client.post(PAGE, data={**HOOK, "csrf_token": token}, headers=HTMX)
    html = added.get_data(as_text=True)
    assert added.status_code == 200 and "<html" not in html and 'id="destinations"' in html
    secret = re.search(r'id="new-secret">([^<]+)<', html).group(1)
    assert "desk &lt;script&gt;x&lt;/script&gt;" in html and "<script>x" not in html
    assert "t0ken" not in html and "https://93.184.215.14/…" in html
    again = client.get(PAGE).get_data(as_text=True)
    assert "<html" in again and secret not in again and 'id="new-secret"' not in again


def test_without_javascript_the_whole_page_comes_back(client, token):
    added = client.post(PAGE, data={**HOOK, "csrf_token": token})
    assert added.status_code == 200 and "<html" in added.get_data(as_text=True)


def test_bad_input_is_422_with_every_field_named_and_values_kept(app, client, token):
    answer = client.post(PAGE, data={"kind": "webhook", "name": "", "url": "http://x y",
                                     "secret": "short", "csrf_token": token}, headers=HTMX)
    html = answer.get_data(as_text=True)
    assert answer.status_code == 422 and count(app) == 0
    for field in ("name", "url", "secret"):
        assert f'id="dest-{field}-error"' in html
    assert 'value="http://x y"' in html


def test_forms_without_the_csrf_token_are_refused(app, client, token):
    assert client.post(PAGE, data=HOOK, headers=HTMX).status_code == 400
    assert count(app) == 0


def test_types_ticked_on_the_form_are_saved(app, client, token):
    client.post(PAGE, data={**HOOK, "types": ["ORDER_EXECUTED", "PRICE_ALERT"],
                            "csrf_token": token}, headers=HTMX)
    with app.app_context():
        dest = db.session.scalar(db.select(Destination))
        assert dest.types == ["ORDER_EXECUTED", "PRICE_ALERT"] and dest.escalate is False


@pytest.mark.parametrize("action", ["delete", "test", "switch-on"])
def test_another_users_destination_answers_404(app, client, auth, token, action):
    auth.create("other@example.com")
    with app.app_context():
        from webapp.destinations import service as destinations
        from webapp.models import User

        other = db.session.scalar(db.select(User.id).where(User.email == "other@example.com"))
        theirs, _ = destinations.create(other, {**HOOK, "name": "theirs"})
        theirs_id = theirs.id
    answer = client.post(f"{PAGE}{theirs_id}/{action}", data={"csrf_token": token},
                         headers=HTMX)
    assert answer.status_code == 404 and count(app) == 1
    assert "theirs" not in client.get(PAGE).get_data(as_text=True)


def test_a_send_tests_answer_shows_the_count_it_left(make_app, auth, refused_port):
    """The panel a Send test answers with counts that test: it showed the count before it
    (0, 1, 2 while 1, 2, 3 were stored), hiding how near the switch-off a destination is."""
    app = make_app(DESTINATIONS_ALLOW_PRIVATE=True)
    client = app.test_client()
    auth.__init__(client, app)
    auth.create()
    auth.login()
    token = csrf_token(client, PAGE)
    hook = {**HOOK, "url": f"http://127.0.0.1:{refused_port}/hook"}  # each test fails
    client.post(PAGE, data={**hook, "csrf_token": token}, headers=HTMX)
    with app.app_context():
        dest_id = db.session.scalar(db.select(Destination.id))
    for failures in (1, 2, 3):
        panel = client.post(f"{PAGE}{dest_id}/test", data={"csrf_token": token},
                            headers=HTMX).get_data(as_text=True)
        assert "failed" in panel
        assert re.search(r'data-label="Failures">(\d+)<', panel).group(1) == str(failures)
