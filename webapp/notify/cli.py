"""`flask tokens ...` and `flask notify`: service tokens and sending notifications by hand."""

import click
from flask.cli import AppGroup, with_appcontext

from webapp.accounts import service as accounts
from webapp.core import logs
from webapp.exceptions import InvalidInput, NotFound
from webapp.extensions import db
from webapp.models import User
from webapp.notify import intake as events
from webapp.notify import service_tokens

tokens = AppGroup("tokens", help="Manage service tokens for POST /api/v1/events.")


@tokens.command("create")
@click.argument("name")
def create_token(name):
    """Create a service token called NAME; the token is the last line printed."""
    try:
        token, plaintext = service_tokens.create(name)
    except InvalidInput as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"created service token {token.name!r} ({token.prefix}...); shown only once:")
    click.echo(plaintext)


@tokens.command("revoke")
@click.argument("name")
def revoke_token(name):
    """Revoke the service token called NAME."""
    try:
        token = service_tokens.revoke(name)
    except (InvalidInput, NotFound) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"revoked {token.name!r}")


@tokens.command("list")
def list_tokens():
    """List live service tokens."""
    for token in service_tokens.live_tokens():
        click.echo(f"{token.name}\t{token.prefix}...\t{token.created_at:%Y-%m-%d %H:%M}")


@click.command("notify")
@click.argument("args", nargs=-1, required=True)
@click.option("--system", is_flag=True, help="Broadcast to every user (then no EMAIL).")
@click.option("--strategy", help="Send to the followers of this strategy (then no EMAIL).")
@click.option("--priority", type=click.Choice(["low", "normal", "high", "critical"]))
@with_appcontext
def notify(args, system, strategy, priority):
    """Send a notification: notify EMAIL TYPE TITLE MESSAGE, or --system TYPE TITLE MESSAGE."""
    broadcast = system or strategy
    if len(args) != (3 if broadcast else 4):
        raise click.UsageError("give EMAIL TYPE TITLE MESSAGE, or TYPE TITLE MESSAGE with "
                               "--system or --strategy")
    item = dict(zip(("type", "title", "message"), args[-3:], strict=True), priority=priority)
    if system:
        item["target"] = "system"
    elif strategy:
        item["strategy_id"] = strategy
    else:
        email = accounts.normalise_email(args[0])
        item["user_id"] = db.session.scalar(db.select(User.id).where(User.email == email))
        if item["user_id"] is None:
            raise click.ClickException(f"no user with email {args[0]}")
    request_id = f"cli-{logs.accept(None)}"  # its deliveries log it, as a request's do
    token = logs.bind(request_id)
    try:
        result = events.publish([item], source="cli")[0]
    finally:
        logs.unbind(token)
    if result["status"] != "accepted":
        raise click.ClickException("rejected:\n" + "\n".join(
            f"  {field}: {error}" for field, error in result["errors"].items()))
    if strategy and not result["ids"]:
        raise click.ClickException(f"no user follows strategy {strategy!r}: nothing was sent")
    click.echo(f"sent {len(result['ids'])} notification(s): {' '.join(result['ids'])} "
               f"(request id {request_id})")


COMMANDS = (tokens, notify)
