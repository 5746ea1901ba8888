"""`flask demo seed`: a demo user with alerts near the fake feed's prices, for `make demo`."""

import click
from flask.cli import AppGroup
from sqlalchemy import func, select

from devtools.fakefeed_demo import DEMO_MARKETS
from webapp.accounts import service as accounts
from webapp.alerts import service as alerts
from webapp.extensions import db, get_redis
from webapp.models import Alert, User

DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "demo-password"
# (symbol, type, offset from the current value, mode, buffer): close enough to fire within
# a minute or so of the demo's random walk, recurring ones again and again.
DEMO_ALERTS = [
    ("BTCUSDT", "above", 0.0010, "recurring", "0.05%"),
    ("BTCUSDT", "below", -0.0010, "recurring", "0.05%"),
    ("ETHUSDT", "above", 0.0015, "once", None),
    ("SOLUSDT", "below", -0.0015, "recurring", "0.05%"),
    ("BNBUSDT", "volume_above", 0.0020, "recurring", "0.1%"),
]

demo = AppGroup("demo", help="The offline demo (`make demo`).")


def demo_user():
    """The demo user, created on first use."""
    user = db.session.scalar(select(User).where(User.email == DEMO_EMAIL))
    return user or accounts.create_user(DEMO_EMAIL, DEMO_PASSWORD)


def current_value(symbol, condition):
    """The last price (or volume) seen, else the demo feed's starting level."""
    price, volume = DEMO_MARKETS[symbol]
    field = "volume" if condition == "volume_above" else "price"
    seen = get_redis().hget(f"tb:price:{symbol}", field)
    return float(seen) if seen else (volume if field == "volume" else price)


def seed_alerts(user_id):
    created = []
    for symbol, condition, offset, mode, buffer in DEMO_ALERTS:
        target = round(current_value(symbol, condition) * (1 + offset), 2)
        data = {"symbol": symbol, "type": condition, "price": target, "mode": mode,
                "note": "demo"}
        if buffer:
            data["buffer"] = buffer
        created.append(alerts.create_alert(user_id, data))
    return created


@demo.command("seed")
def seed():
    """Create the demo user and a few alerts near the demo prices (once)."""
    user = demo_user()
    has = db.session.scalar(select(func.count(Alert.id)).where(Alert.user_id == user.id))
    if has:
        click.echo(f"demo user {DEMO_EMAIL} already has {has} alerts")
        click.echo(f"log in as {DEMO_EMAIL} / {DEMO_PASSWORD}")
        return
    for alert in seed_alerts(user.id):
        click.echo(f"alert {alert.id}: {alert.symbol} {alert.condition} {alert.target}")
    click.echo(f"log in as {DEMO_EMAIL} / {DEMO_PASSWORD}")
