"""`flask alerts ...`: operator tools for the alert index."""

import click
from flask.cli import AppGroup

from webapp import accounts, alert_index, alerts
from webapp.extensions import db
from webapp.models import User
from worker import slowpath

alerts_cli = AppGroup("alerts", help="Manage price and volume alerts.")


@alerts_cli.command("reindex")
def reindex():
    """Settle fired alerts in SQL, then rebuild the Redis alert index from it."""
    # as the listener does at start-up: a one-shot alert that just fired is still active in
    # SQL until its slow-path entry is handled (the index's fired marker covers the rest)
    click.echo(f"settled {slowpath.settle()} fired notifications")
    count = alert_index.rebuild()
    click.echo(f"indexed {count} alerts over {len(alert_index.symbols())} symbols")


@alerts_cli.command("list")
@click.argument("email")
def list_alerts(email):
    """List EMAIL's alerts."""
    user = db.session.scalar(db.select(User).where(User.email == accounts.normalise_email(email)))
    if user is None:
        raise click.ClickException(f"no user with email {email}")
    for alert in alerts.list_alerts(user.id):
        click.echo(f"{alert.id}\t{alert.symbol}\t{alert.condition}\t"
                   f"{alert_index.fmt_num(alert.target)}\t{alert.mode}\t{alerts.status(alert)}")
