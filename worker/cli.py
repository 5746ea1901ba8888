"""The commands that start the background processes: `flask worker`, `flask scheduler`,
`flask listener`, and `flask alerts reindex` (it settles the slow path first).

The web app never imports this: `wsgi.py` adds these commands to the app it makes.
"""

import click

from webapp.alerts import index as alert_index
from webapp.alerts.cli import alerts_cli
from worker import slowpath
from worker.listener.hosting import listener_command
from worker.runner import run_worker
from worker.schedule import run_scheduler


@alerts_cli.command("reindex")
def reindex():
    """Settle fired alerts in SQL, then rebuild the Redis alert index from it."""
    # as the listener does at start-up: a one-shot alert that just fired is still active in
    # SQL until its slow-path entry is handled (the index's fired marker covers the rest)
    click.echo(f"settled {slowpath.settle()} fired notifications")
    count = alert_index.rebuild()
    click.echo(f"indexed {count} alerts over {len(alert_index.symbols())} symbols")


def register(app):
    for command in (run_worker, run_scheduler, listener_command):
        app.cli.add_command(command)
