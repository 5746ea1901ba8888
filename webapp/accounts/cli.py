"""`flask users ...` and `flask apikeys ...`: accounts from the command line."""

import click
from flask.cli import AppGroup

from webapp.accounts import service as accounts
from webapp.exceptions import InvalidInput
from webapp.extensions import db
from webapp.models import User

users = AppGroup("users", help="Manage user accounts.")
apikeys = AppGroup("apikeys", help="Manage API keys.")


@users.command("create")
@click.argument("email")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--admin", is_flag=True, help="Allow the admin pages.")
def create_user(email, password, admin):
    """Create a user who can log in with EMAIL and the password."""
    try:
        user = accounts.create_user(email, password, is_admin=admin)
    except InvalidInput as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"created user {user.id} {user.email}")


@apikeys.command("create")
@click.argument("email")
@click.option("--name", default="cli", help="A label to tell keys apart.")
def create_api_key(email, name):
    """Create an API key for EMAIL; the key is the last line printed."""
    user = db.session.scalar(db.select(User).where(User.email == accounts.normalise_email(email)))
    if user is None:
        raise click.ClickException(f"no user with email {email}")
    key, plaintext = accounts.create_api_key(user, name)
    click.echo(f"created key {key.prefix}... for {user.email}; it is shown only once:")
    click.echo(plaintext)


COMMANDS = (users, apikeys)
