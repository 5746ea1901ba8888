"""`flask tokens ...`, `flask vapid-keys` and `flask notify`: what they print, and their
error paths (non-zero exit, a clear message, nothing half-written). One run is a real
`flask` process beside a served site."""

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from tests.live_server import ROOT
from webapp.accounts import service as accounts
from webapp.extensions import db
from webapp.models import ServiceToken

pytestmark = pytest.mark.both_databases


def tokens(app):
    """(name, revoked) of every service token row."""
    with app.app_context():
        rows = db.session.execute(select(ServiceToken.name, ServiceToken.revoked_at)).all()
        db.session.remove()
        return sorted((name, revoked is not None) for name, revoked in rows)


def invoke(runner, *args):
    return runner.invoke(args=list(args))


def test_tokens_list_shows_live_tokens_by_name_never_their_secret(app, runner):
    assert invoke(runner, "tokens", "list").output == ""
    secrets = {}
    for name in ("risk-engine", "order-system", "old-feed"):
        result = invoke(runner, "tokens", "create", name)
        assert result.exit_code == 0, result.output
        secrets[name] = result.output.strip().splitlines()[-1]
    assert invoke(runner, "tokens", "revoke", "old-feed").exit_code == 0
    result = invoke(runner, "tokens", "list")
    assert result.exit_code == 0
    rows = [line.split("\t") for line in result.output.splitlines()]
    assert [row[0] for row in rows] == ["order-system", "risk-engine"]  # by name, live only
    for name, prefix, created in rows:
        assert prefix == secrets[name][:10] + "..."
        assert len(created) == len("2026-01-01 12:00")
    assert not any(secret in result.output for secret in secrets.values())


def test_vapid_keys_prints_a_matching_p256_pair_each_time_new(runner):
    first, second = (invoke(runner, "vapid-keys") for _ in range(2))
    assert first.exit_code == 0 and second.exit_code == 0
    pair = dict(line.split("=", 1) for line in first.output.splitlines())
    assert set(pair) == {"VAPID_PRIVATE_KEY", "VAPID_PUBLIC_KEY"}
    raw_private = _unb64(pair["VAPID_PRIVATE_KEY"])
    assert len(raw_private) == 32
    private = ec.derive_private_key(int.from_bytes(raw_private, "big"), ec.SECP256R1())
    public = private.public_key().public_bytes(serialization.Encoding.X962,
                                               serialization.PublicFormat.UncompressedPoint)
    assert _unb64(pair["VAPID_PUBLIC_KEY"]) == public  # the public key is the private's
    assert "=" not in pair["VAPID_PUBLIC_KEY"]  # base64url without padding, as browsers take it
    assert first.output != second.output


def _unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.parametrize(("args", "message"), [
    (["tokens", "create", ""], "1-80 characters"),
    (["tokens", "create", "   "], "1-80 characters"),
    (["tokens", "create", "x" * 81], "1-80 characters"),
    (["tokens", "create", "a\u0000b"], "Control characters"),
    (["tokens", "revoke", "nobody"], "no service token named 'nobody'"),
    (["tokens", "create"], "Missing argument 'NAME'"),
    (["tokens", "revoke"], "Missing argument 'NAME'"),
    (["tokens", "revoke", "a", "b"], "unexpected extra argument"),
    (["tokens", "create", "--name", "a"], "No such option"),
    (["tokens", "rotate", "a"], "No such command 'rotate'"),
])
def test_tokens_bad_input_exits_non_zero_with_a_clear_message_and_writes_nothing(
        app, runner, args, message):
    result = invoke(runner, *args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert tokens(app) == []


def test_a_taken_name_is_refused_and_the_first_token_stays(app, runner):
    assert invoke(runner, "tokens", "create", "risk-engine").exit_code == 0
    result = invoke(runner, "tokens", "create", " risk-engine ")
    assert result.exit_code == 1
    assert "A token named 'risk-engine' exists" in result.output
    assert tokens(app) == [("risk-engine", False)]


def test_revoking_twice_says_so_and_a_revoked_name_is_not_reused(app, runner):
    assert invoke(runner, "tokens", "create", "risk-engine").exit_code == 0
    result = invoke(runner, "tokens", "revoke", " risk-engine")  # stripped, as create stores it
    assert result.exit_code == 0 and result.output == "revoked 'risk-engine'\n"
    again = invoke(runner, "tokens", "revoke", "risk-engine")
    assert again.exit_code == 1
    assert "'risk-engine' was already revoked (" in again.output
    reused = invoke(runner, "tokens", "create", "risk-engine")
    assert reused.exit_code == 1
    assert "revoked token was named 'risk-engine'; pick another name" in reused.output
    assert tokens(app) == [("risk-engine", True)]


def test_notify_an_unknown_user_exits_non_zero_and_sends_nothing(app, runner):
    redis = app.extensions["redis"]
    before = redis.dbsize()
    result = invoke(runner, "notify", "ghost@example.com", "PRICE_ALERT", "Title", "Body")
    assert result.exit_code == 1
    assert "no user with email ghost@example.com" in result.output
    assert redis.dbsize() == before


def test_notify_refusals_read_as_lines_and_a_strategy_nobody_follows_is_one(app, runner):
    with app.app_context():
        accounts.create_user("a@example.com", "long password")
    bad = invoke(runner, "notify", "a@example.com", "NOT_A_TYPE", "Title", "Body")
    assert bad.exit_code == 1 and "rejected:\n  type: " in bad.output and "{" not in bad.output
    typo = invoke(runner, "notify", "--strategy", "nostrat", "PRICE_ALERT", "Title", "Body")
    assert typo.exit_code == 1  # it said "sent 0 notification(s)", as if it had worked
    assert "no user follows strategy 'nostrat': nothing was sent" in typo.output


@pytest.mark.parametrize("args", [
    ["notify", "PRICE_ALERT", "Title", "Body"],  # a user's notification needs EMAIL
    ["notify", "--system", "a@example.com", "SYSTEM", "Title", "Body"],
    ["notify", "--priority", "urgent", "a@example.com", "PRICE_ALERT", "Title", "Body"],
])
def test_notify_with_bad_arguments_is_a_usage_error(runner, args):
    result = invoke(runner, *args)
    assert result.exit_code == 2, result.output
    assert "Error" in result.output and "Traceback" not in result.output


def flask(site, *args):
    """A real `flask ...` process on the served site's database and Redis."""
    env = {**os.environ, "FLASK_APP": "wsgi.py", "REDIS_URL": site.redis["url"],
           "DATABASE_URL": site.app.config["SQLALCHEMY_DATABASE_URI"],
           "SECRET_KEY": "live-secret", "INSTANCE_PATH": site.app.config["INSTANCE_PATH"]}
    return subprocess.run([str(Path(sys.executable).parent / "flask"), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def publish(site, token):
    return requests.post(site.url + "/api/v1/events", timeout=10, json={
        "type": "SYSTEM_MAINTENANCE", "target": "system", "title": "Upgrade at 02:00"},
        headers={"Authorization": f"Bearer {token}"})


def test_a_flask_process_beside_the_running_site_creates_and_revokes_tokens(live_site):
    name = f"cli-{os.getpid()}"
    created = flask(live_site, "tokens", "create", name)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert publish(live_site, token).status_code == 202  # the served site takes it at once
    listed = flask(live_site, "tokens", "list")
    assert name in listed.stdout and token not in listed.stdout
    assert flask(live_site, "tokens", "revoke", name).returncode == 0
    assert publish(live_site, token).status_code == 401
    again = flask(live_site, "tokens", "revoke", name)
    assert again.returncode == 1
    assert f"Error: name: '{name}' was already revoked" in again.stderr
    assert "Traceback" not in again.stderr
    with live_site.app.app_context():
        count = db.session.scalar(select(func.count()).select_from(ServiceToken)
                                  .where(ServiceToken.name == name))
        db.session.remove()
    assert count == 1
