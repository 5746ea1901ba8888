import re

import pytest

from tests.conftest import csrf_token
from webapp.extensions import db

pytestmark = pytest.mark.both_databases


def test_api_without_auth_is_401_json_not_a_redirect(client):
    response = client.get("/api/v1/me")
    assert response.status_code == 401
    assert response.is_json
    assert response.json["error"] == "unauthorized"


@pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
def test_api_key_authenticates_with_either_header(client, auth, header):
    auth.create()
    key = auth.api_key()
    value = key if header == "X-API-Key" else f"Bearer {key}"
    response = client.get("/api/v1/me", headers={header: value})
    assert response.status_code == 200
    assert response.json["email"] == "trader@example.com"


@pytest.mark.parametrize("value", ["tb_wrong", "", "x" * 10_000, "Basic abc"])
def test_unknown_api_keys_are_refused(client, auth, value):
    auth.create()
    response = client.get("/api/v1/me", headers={"Authorization": value, "X-API-Key": value})
    assert response.status_code == 401


def test_settings_page_creates_lists_prefix_and_revokes(client, auth):
    auth.create()
    auth.login()
    token = csrf_token(client, "/settings/api-keys")
    created = client.post("/settings/api-keys", data={"name": "bot <b>", "csrf_token": token})
    assert created.status_code == 302  # post, redirect, get: a reload makes no second key
    page = client.get("/settings/api-keys").get_data(as_text=True)
    key = re.search(r'id="new-key">([^<]+)<', page).group(1)
    assert "bot &lt;b&gt;" in page
    assert client.get("/api/v1/me", headers={"X-API-Key": key}).status_code == 200
    listing = client.get("/settings/api-keys").get_data(as_text=True)
    assert key not in listing and key[:10] in listing  # shown once, then only its prefix
    key_id = re.search(r"/settings/api-keys/(\d+)/revoke", listing).group(1)
    client.post(f"/settings/api-keys/{key_id}/revoke", data={"csrf_token": token})
    assert client.get("/api/v1/me", headers={"X-API-Key": key}).status_code == 401


def test_the_page_script_gets_the_list_with_the_key_and_a_second_revoke_is_news(app, client,
                                                                                 auth):
    auth.create()
    auth.login()
    token, htmx = csrf_token(client, "/settings/api-keys"), {"HX-Request": "true"}
    created = client.post("/settings/api-keys", data={"name": "desk", "csrf_token": token},
                          headers=htmx)
    fragment = created.get_data(as_text=True)
    assert created.status_code == 200 and fragment.startswith('<div id="api-keys">')
    key = re.search(r'id="new-key">([^<]+)<', fragment).group(1)
    assert client.get("/api/v1/me", headers={"X-API-Key": key}).status_code == 200
    assert key not in client.get("/settings/api-keys").get_data(as_text=True)  # once only
    [key_id] = key_ids(app, "trader@example.com")
    revoke = f"/settings/api-keys/{key_id}/revoke"
    first = client.post(revoke, data={"csrf_token": token}, headers=htmx)
    assert "Key “desk” revoked" in first.get_data(as_text=True)
    again = client.post(revoke, data={"csrf_token": token}, headers=htmx)  # another tab's
    assert again.status_code == 200
    assert "revoked already, perhaps in another tab" in again.get_data(as_text=True)
    assert client.get("/api/v1/me", headers={"X-API-Key": key}).status_code == 401

def key_ids(app, email):
    from webapp.models import ApiKey, User

    with app.app_context():
        return db.session.scalars(db.select(ApiKey.id).join(User).where(
            User.email == email, ApiKey.revoked_at.is_(None))).all()


def test_cannot_revoke_another_users_key(app, client, auth):
    auth.create("other@example.com")
    other_key = auth.api_key("other@example.com")
    [other_id] = key_ids(app, "other@example.com")
    auth.create()
    auth.login()
    auth.api_key()  # a key of the caller's own, so "no key at all" is not why nothing happens
    token = csrf_token(client, "/settings/api-keys")
    response = client.post(f"/settings/api-keys/{other_id}/revoke",
                           data={"csrf_token": token}, follow_redirects=True)
    assert "No such key." in response.get_data(as_text=True)
    assert key_ids(app, "other@example.com") == [other_id]
    assert client.get("/api/v1/me", headers={"X-API-Key": other_key}).status_code == 200


def test_a_key_name_with_control_characters_is_refused_beside_its_field(client, auth):
    auth.create()
    auth.login()
    token = csrf_token(client, "/settings/api-keys")
    response = client.post("/settings/api-keys", data={"name": "ci\u0000key", "csrf_token": token})
    assert response.status_code == 422
    assert "Control characters are not allowed" in response.get_data(as_text=True)
    assert "ci\u0000key" not in client.get("/settings/api-keys").get_data(as_text=True)


@pytest.mark.parametrize("key_id", [0, 2**31, 10**20])
def test_an_id_no_key_can_have_is_no_such_key(client, auth, key_id):
    auth.create()
    auth.login()
    token = csrf_token(client, "/settings/api-keys")
    response = client.post(f"/settings/api-keys/{key_id}/revoke", data={"csrf_token": token},
                           follow_redirects=True)
    assert response.status_code == 200 and "No such key." in response.get_data(as_text=True)


def test_api_session_caller_needs_csrf_for_writes_key_caller_does_not(client, auth):
    auth.create()
    key = auth.api_key()
    auth.login()
    assert client.get("/api/v1/me").status_code == 200  # reads need no token
    refused = client.post("/api/v1/notifications/read-all")
    assert refused.status_code == 400 and refused.json["error"] == "bad_request"
    token = csrf_token(client, "/dashboard")
    sent = client.post("/api/v1/notifications/read-all", headers={"X-CSRFToken": token})
    # The one unread item is the "API key created" notice; the refused post left it unread.
    assert sent.status_code == 200 and sent.json == {"updated": 1, "unread_count": 0}
    client.set_cookie("session", "", expires=0)  # a script with its key: no browser, no token
    by_key = client.post("/api/v1/notifications/read-all", headers={"X-API-Key": key})
    assert by_key.status_code == 200 and by_key.json["updated"] == 0


@pytest.mark.parametrize("name", ["", "n" * 10_000])
def test_api_key_form_rejects_bad_names(client, auth, name):
    auth.create()
    auth.login()
    token = csrf_token(client, "/settings/api-keys")
    response = client.post("/settings/api-keys", data={"name": name, "csrf_token": token})
    assert response.status_code == 422


# Without a route (404) or without the method (405): a caller without credentials learns
# neither, whatever the path or method.
NO_ROUTE = [("DELETE", "/api/v1/alerts/x", 404), ("GET", "/api/v1/no/such/path", 404),
            ("POST", "/api/v1", 404), ("PUT", "/api/v1/alerts", 405),
            ("GET", "/api/v1/events", 405), ("POST", "/api/v1/notifications/1/read", 405)]


@pytest.mark.parametrize(("method", "path", "_"), NO_ROUTE)
@pytest.mark.parametrize("credentials", [{}, {"X-API-Key": "tb_wrong"},
                                         {"Authorization": "Bearer tbs_wrong"}])
def test_api_answers_401_before_404_or_405_without_credentials(client, method, path, _,
                                                               credentials):
    response = client.open(path, method=method, headers=credentials)
    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"


@pytest.mark.parametrize(("method", "path", "status"), NO_ROUTE)
def test_api_callers_with_credentials_still_get_404_and_405(client, auth, method, path,
                                                            status):
    auth.create()
    key = auth.api_key()
    assert client.open(path, method=method, headers={"X-API-Key": key}).status_code == status
    auth.login()  # a browser session: no CSRF token needed where there is nothing to do
    assert client.open(path, method=method).status_code == status


def test_service_tokens_get_404_and_405_too(app, client):
    from webapp.notify import service_tokens

    with app.app_context():
        token = service_tokens.create("strategy-engine")[1]
    headers = {"X-Service-Token": token}
    assert client.get("/api/v1/events", headers=headers).status_code == 405
    assert client.get("/api/v1/no/such/path", headers=headers).status_code == 404
    assert client.get("/api/v1/notifications", headers=headers).status_code == 401


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/api/v1/openapi.json", 200), ("POST", "/api/v1/health", 405),
    ("DELETE", "/api/v1/openapi.json", 405)])
def test_public_api_paths_need_no_credentials(client, method, path, status):
    assert client.open(path, method=method).status_code == status


def test_form_fields_name_only_the_autocomplete_they_were_given(client, auth):
    auth.create()
    auth.login()
    for path in ("/settings/api-keys", "/settings/hooks"):
        page = client.get(path).get_data(as_text=True)
        assert 'autocomplete="None"' not in page and "autocomplete" not in page.split(
            "<main", 1)[1].split("</main>", 1)[0], path
    auth.logout()
    login = client.get("/auth/login").get_data(as_text=True)
    assert 'autocomplete="email"' in login and 'autocomplete="current-password"' in login
