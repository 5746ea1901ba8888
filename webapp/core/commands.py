"""Operator commands (`flask users`, `flask alerts`, ...): wired here, and a Redis that is not
there is explained in a sentence, not a traceback."""

import functools

import click
from flask import current_app
from flask.cli import with_appcontext

from webapp.config import REDIS_ADDRESS_FILE, private_redis_url
from webapp.core.outage import REDIS_DOWN
from webapp.extensions import get_redis


def register(app, commands):
    """Add the operator commands to `flask`, each explaining a missing Redis."""
    for command in commands:
        _explain_redis_errors(command)
        app.cli.add_command(command)


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
            nodes = current_app.config["REDIS_CLUSTER_NODES"]
            if nodes:
                where = ",".join(f"{host}:{port}" for host, port in nodes)
                raise click.ClickException(
                    f"The Redis Cluster at {where} (REDIS_CLUSTER_NODES) does not answer, "
                    "or is failing over: start it, or wait for its state to be ok.") from exc
            raise click.ClickException(no_redis_message(current_app.config["REDIS_URL"])) from exc

    run.explains_redis_errors = True
    command.callback = with_appcontext(run)
