"""This database's own id, for `make run`'s private Redis: it keeps a data folder per
database (devtools/launch.py), as inboxes and read state are keyed by user id alone."""

import secrets

import click
from flask.cli import with_appcontext

from webapp.core.database import insert_ignore
from webapp.extensions import db
from webapp.models import Installation


def installation_id():
    """This database's id, made on first use."""
    found = db.session.get(Installation, 1)
    if found is None:
        insert_ignore(Installation, [{"id": 1, "token": secrets.token_hex(6)}])
        found = db.session.get(Installation, 1)
    return found.token


@click.command("installation-id", hidden=True)
@with_appcontext
def installation_id_command():
    """Print this database's id."""
    click.echo(installation_id())


# The launcher asks before it starts its private Redis: no Redis need answer (commands.py
# checks one for every other command).
installation_id_command.callback.explains_redis_errors = True


COMMANDS = [installation_id_command]
