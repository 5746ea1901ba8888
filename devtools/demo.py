"""`flask demo seed`: a demo user with alerts near the fake feed's prices, for `make demo`."""

import click
from flask.cli import AppGroup
from sqlalchemy import func, select

from devtools.fakefeed_demo import DEMO_MARKETS
from webapp import keys
from webapp.accounts import service as accounts
from webapp.alerts import service as alerts
from webapp.extensions import db, get_redis
from webapp.models import Alert, User

DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "demo-password"
# (symbol, type, offset from the current value, mode, buffer): close enough to fire within
# a minute or so of the demo's random walk, recurring ones again and again. A channel's
# offset is its half-width; a move's is its pct (as a fraction) over one minute.
DEMO_ALERTS = [
    ("BTCUSDT", "above", 0.0010, "recurring", "0.05%"),
    ("BTCUSDT", "below", -0.0010, "recurring", "0.05%"),
    ("ETHUSDT", "above", 0.0015, "once", None),
    ("SOLUSDT", "below", -0.0015, "recurring", "0.05%"),
    ("BNBUSDT", "volume_above", 0.0020, "recurring", "0.1%"),
    ("BTCUSDT", "crossing", 0.0005, "recurring", "0.02%"),
    ("ETHUSDT", "channel_exit", 0.0010, "recurring", None),
    ("SOLUSDT", "pct_up", 0.0010, "recurring", "0.05%"),
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
    seen = get_redis().hget(keys.price(symbol), field)
    return float(seen) if seen else (volume if field == "volume" else price)


def levels(symbol, condition, offset):
    """The kind's own fields, `offset` away from where the demo market is."""
    value = current_value(symbol, condition)
    if condition.startswith("channel"):
        return {"low": round(value * (1 - offset), 2), "high": round(value * (1 + offset), 2)}
    if condition.startswith("pct"):
        return {"pct": round(offset * 100, 4), "window": "1m"}
    return {"price": round(value * (1 + offset), 2)}


def seed_alerts(user_id):
    created = []
    for symbol, condition, offset, mode, buffer in DEMO_ALERTS:
        data = {"symbol": symbol, "type": condition, "mode": mode, "note": "demo",
                **levels(symbol, condition, offset)}
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
