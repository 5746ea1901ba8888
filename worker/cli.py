"""Flask CLI commands: operator tools and the background processes."""

import functools
import logging
import sys
import threading

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext
from rq import SimpleWorker

from webapp import accounts
from webapp.config import REDIS_ADDRESS_FILE, private_redis_url
from webapp.exceptions import InvalidInput
from webapp.extensions import db, get_redis
from webapp.models import User
from webapp.outage import REDIS_DOWN, Outage
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


def no_redis_message(url):
    """What to do when a command finds no Redis at `url`."""
    if url == private_redis_url():
        return (f"No Redis answers at {url}, the address `make run` left in "
                f"{REDIS_ADDRESS_FILE}: it is not running any more. Start it again with "
                "`make run`, or set REDIS_URL to a running Redis.")
    return (f"No Redis answers at {url}. Start Tickerbell with `make run` first (commands "
            "from another shell then find its private Redis on their own), or set REDIS_URL "
            "to a running Redis.")


def _explain_redis_errors(command):
    """An operator command that meets no Redis says where it looked, not a traceback."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _explain_redis_errors(sub)
        return
    callback = command.callback
    if getattr(callback, "explains_redis_errors", False):
        return

    @functools.wraps(callback)
    def run(*args, **kwargs):
        try:
            get_redis().ping()  # before any change: its notices must reach the right Redis
            return callback(*args, **kwargs)
        except REDIS_DOWN as exc:
            url = current_app.config["REDIS_URL"]
            raise click.ClickException(no_redis_message(url)) from exc

    run.explains_redis_errors = True
    command.callback = with_appcontext(run)


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
    for command in (users, apikeys, alerts_cli, demo.demo, *notify_commands):
        _explain_redis_errors(command)
