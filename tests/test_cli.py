import pytest

from webapp import create_app
from webapp.extensions import db
from webapp.models import User

pytestmark = pytest.mark.both_databases


def test_users_create_then_login_and_apikey_last_line(runner, client, auth):
    result = runner.invoke(args=["users", "create", "ops@example.com", "--password", "s3cret-pw!"])
    assert result.exit_code == 0, result.output
    assert auth.login("ops@example.com", "s3cret-pw!").status_code == 302
    result = runner.invoke(args=["apikeys", "create", "ops@example.com"])
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    assert client.get("/api/v1/me", headers={"X-API-Key": key}).json["email"] == "ops@example.com"
    bearer = client.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"})
    assert bearer.status_code == 200


@pytest.mark.parametrize("args", [
    ["users", "create", "ops@example.com", "--password", "short"],
    ["apikeys", "create", "nobody@example.com"],
    ["users", "create", "bad", "--password", "a long password"],  # as the sign-up page says
    ["users", "create", "two@@example.com", "--password", "a long password"],
])
def test_cli_reports_bad_input_clearly(runner, args, app):
    result = runner.invoke(args=args)
    assert result.exit_code != 0
    assert "Error" in result.output
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(User.id))) == 0


def test_worker_burst_connects_and_exits_cleanly(runner):
    result = runner.invoke(args=["worker", "--burst"])
    assert result.exit_code == 0, result.output


def test_worker_refuses_a_queue_nothing_uses(runner):
    result = runner.invoke(args=["worker", "nosuchqueue"])  # it listened there for ever
    assert result.exit_code == 2 and "'nosuchqueue' is not one of" in result.output


def test_production_refuses_the_development_secret(monkeypatch):
    monkeypatch.setenv("TICKERBELL_ENV", "production")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app()
    monkeypatch.setenv("SECRET_KEY", "a-real-and-long-random-secret-value")
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"})
    assert app.config["SESSION_COOKIE_SECURE"] is True
