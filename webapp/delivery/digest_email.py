"""What a daily summary or weekly performance email says, rendered when its delivery is sent.

When they go out is webapp/delivery/digests.py; this side is read by the delivery job too,
so it must not import the job's module.
"""

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta

from flask import current_app, render_template
from sqlalchemy import select

from webapp import clock
from webapp.delivery.channels import email
from webapp.extensions import db
from webapp.inbox import service as inbox
from webapp.market import price_history
from webapp.models import Alert, DeliveryLog, DeliveryStatus
from webapp.notify import types as notification_types
from webapp.preferences import service as preferences

TITLES = {"daily": "Daily summary", "weekly": "Weekly performance"}
ALERT_TYPES = ("PRICE_ALERT", "VOLUME_ALERT")
DEFAULT_MAX_LISTED = 50
MAX_READ = 5000  # notifications read per digest; the inbox keeps 7 days
ID_PREFIX = "digest:"


def digest_id(kind, start_day):
    """The delivery row's notification_id of one digest: `digest:{kind}:{start date}`."""
    return f"{ID_PREFIX}{kind}:{start_day.isoformat()}"


def is_digest(notification_id):
    return notification_id.startswith(ID_PREFIX)


def period_bounds(pref, kind, start_day):
    """Aware UTC (start, end) of the period beginning at local midnight of start_day."""
    tz = preferences.zone(pref)
    length = timedelta(days=7 if kind == "weekly" else 1)
    start = datetime.combine(start_day, time(), tzinfo=tz)
    end = datetime.combine(start_day + length, time(), tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def _notifications(user_id, start, end):
    return inbox.between(user_id, clock.to_ms(start), clock.to_ms(end), MAX_READ)


def watched(user_id, start, end):
    """The change of each symbol the user has alerts on over the period (the statement's too)."""
    symbols = db.session.scalars(select(Alert.symbol).where(Alert.user_id == user_id)
                                 .distinct().order_by(Alert.symbol)).all()
    rows = []
    for symbol in symbols:
        moved = price_history.change(symbol, clock.to_ms(start), clock.to_ms(end))
        if moved:
            rows.append({"symbol": symbol, "first": moved[0], "last": moved[1], "pct": moved[2]})
    return rows


def build(user, pref, kind, start_day):
    """Everything the digest says, as plain data for the templates."""
    start, end = period_bounds(pref, kind, start_day)
    items = _notifications(user.id, start, end)
    label = {name: t.label for name, t in notification_types.TYPES.items()}
    held_ids = set(db.session.scalars(select(DeliveryLog.notification_id).where(
        DeliveryLog.user_id == user.id, DeliveryLog.status == DeliveryStatus.DIGEST)).all())
    return {
        "kind": kind, "title": TITLES[kind], "user": user, "start_day": start_day,
        "end_day": start_day + timedelta(days=6 if kind == "weekly" else 0),
        "tz": pref.timezone, "total": len(items),
        "by_type": Counter(label.get(n.get("type"), n.get("type")) for n in items).most_common(),
        "fired": [n for n in items if n.get("type") in ALERT_TYPES][:DEFAULT_MAX_LISTED],
        "critical": [n for n in items if notification_types.is_critical(n)][:DEFAULT_MAX_LISTED],
        "held": [n for n in items if n["id"] in held_ids][:DEFAULT_MAX_LISTED],
        "watched": watched(user.id, start, end),
        "base_url": current_app.config["PUBLIC_URL"],
    }


def render(digest):
    """(subject, text, html) for a built digest."""
    period = digest["start_day"].isoformat()
    if digest["end_day"] != digest["start_day"]:
        period += f" to {digest['end_day'].isoformat()}"
    subject = f"Tickerbell {digest['title'].lower()}: {period}"
    return (subject, render_template("email/digest.txt", d=digest, period=period),
            render_template("email/digest.html", d=digest, period=period))


def message(user, pref, delivery_id):
    """The email for a digest delivery row (`digest:{kind}:{date}`), through the email channel."""
    _, kind, day = delivery_id.split(":")
    subject, text, html = render(build(user, pref, kind, date.fromisoformat(day)))
    return email.compose(current_app.config, email.address(user, pref), subject, text, html,
                         headers={"X-Tickerbell-Digest": f"{kind} {day}"})
