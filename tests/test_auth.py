import pytest

from tests.conftest import csrf_token

pytestmark = pytest.mark.both_databases


def test_register_logs_in_and_shows_user(client):
    token = csrf_token(client, "/auth/register")
    response = client.post("/auth/register", data={
        "email": "New@Example.com", "password": "longenough", "confirm": "longenough",
        "csrf_token": token}, follow_redirects=True)
    assert response.status_code == 200
    assert b"new@example.com" in response.data


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
