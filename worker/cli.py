"""Flask CLI commands: operator tools and the background processes."""

import logging
import sys
import threading

import click
from flask.cli import AppGroup, with_appcontext
from rq import SimpleWorker

from webapp import accounts
from webapp.exceptions import InvalidInput
from webapp.extensions import db, get_redis
from webapp.models import User
from webapp.outage import Outage
from webapp.processes import Heartbeat
from worker.queues import QUEUES, rq_connection, work_forever

users = AppGroup("users", help="Manage user accounts.")
apikeys = AppGroup("apikeys", help="Manage API keys.")


def _setup_logging():
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


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


@click.command("worker")
@click.argument("queues", nargs=-1)
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@with_appcontext
def run_worker(queues, burst):
    """Run an RQ worker on QUEUES (default: high, default, low)."""
    _setup_logging()
    # SimpleWorker runs jobs in this process, inside the app context made once here. RQ's own
    # scheduler (a forked process holding only Redis) re-queues jobs whose retry waits.
    beat = Heartbeat(get_redis(), "worker").start()
    try:
        work_forever(lambda: SimpleWorker(queues or QUEUES, connection=rq_connection()),
                     Outage("worker"), threading.Event(), burst=burst, with_scheduler=True)
    finally:
        beat.end()


def register(app):
    for command in (users, apikeys, run_worker):
        app.cli.add_command(command)
    from worker import schedule

    app.cli.add_command(schedule.run_scheduler)
    from worker.alerts_cli import alerts_cli

    app.cli.add_command(alerts_cli)
    from worker import demo, hosting

    app.cli.add_command(hosting.listener_command)
    app.cli.add_command(demo.demo)
    from worker.notify_cli import COMMANDS as notify_commands

    for command in notify_commands:
        app.cli.add_command(command)
