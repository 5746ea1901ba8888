"""GET /: the front door sends a visitor to sign in and a signed-in user to the dashboard."""


def test_logged_out_home_redirects_to_the_login_page(client):
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"] == "/auth/login"
    page = client.get("/", follow_redirects=True)
    assert page.status_code == 200 and "<h1>Log in</h1>" in page.get_data(as_text=True)


def test_logged_in_home_redirects_to_the_dashboard(client, auth):
    auth.create()
    auth.login()
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"] == "/dashboard"
    page = client.get("/", follow_redirects=True)
    assert page.status_code == 200 and "trader@example.com" in page.get_data(as_text=True)
    auth.logout()
    assert client.get("/").headers["Location"] == "/auth/login"
