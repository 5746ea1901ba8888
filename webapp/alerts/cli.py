"""`flask alerts list`: operator tools for alerts (`reindex` is the worker's: worker/cli.py)."""

import click
from flask.cli import AppGroup

from webapp.accounts import service as accounts
from webapp.alerts import index as alert_index
from webapp.alerts import service as alerts
from webapp.alerts.fields import WINDOWS
from webapp.extensions import db
from webapp.models import User

alerts_cli = AppGroup("alerts", help="Manage price and volume alerts.")


@alerts_cli.command("list")
@click.argument("email")
def list_alerts(email):
    """List EMAIL's alerts."""
    user = db.session.scalar(db.select(User).where(User.email == accounts.normalise_email(email)))
    if user is None:
        raise click.ClickException(f"no user with email {email}")
    for alert in alerts.list_alerts(user.id):
        click.echo(f"{alert.id}\t{alert.symbol}\t{alert.condition}\t{_level(alert)}\t"
                   f"{alert.mode}\t{alerts.status(alert)}")


def _level(alert):
    """What the alert watches, as its kind gives it: 65000, 60000-65000, 5% in 3600s."""
    if alert.high is not None:
        return f"{alert_index.fmt_num(alert.target)}-{alert_index.fmt_num(alert.high)}"
    if alert.window_s:
        name = next((n for n, s in WINDOWS.items() if s == alert.window_s), f"{alert.window_s}s")
        return f"{alert_index.fmt_num(alert.target)}% in {name}"  # as the page and API say it
    return alert_index.fmt_num(alert.target)


COMMANDS = (alerts_cli,)
