"""What monthly statements count, kept in SQL past the 7-day inbox.

Notifications: one statement_entries row per routed notification, written by the router's
slow steps (idempotent by id, like the audit row). Deliveries: the delivery log. Both are
pruned by worker/jobs.py, after a statement's month has been sent.
"""

from sqlalchemy import func, select

from webapp import clock
from webapp.core.database import insert_ignore
from webapp.extensions import db
from webapp.models import DeliveryLog, Destination, StatementEntry

ALERT_TYPES = ("PRICE_ALERT", "VOLUME_ALERT")
ALERT_FIELDS = ("symbol", "condition", "target", "price")


def record(notifications):
    """Keep each stored notification's type (and a fired alert's prices), once per id."""
    insert_ignore(StatementEntry, [_entry(n) for n in notifications])


def _entry(notification):
    data = notification.get("data") or {}
    kept = {}
    if notification.get("type") in ALERT_TYPES:
        kept = {field: data[field] for field in ALERT_FIELDS if field in data}
        kept["title"] = str(notification.get("title") or "")[:200]
    return {"id": str(notification["id"]), "user_id": int(notification["user_id"]),
            "type": str(notification.get("type") or "")[:40],
            "created_at": clock.ms_to_sql(notification["created_at"]), "data": kept}


def _in_period(column, start, end):
    """start <= column < end, for aware datetimes against the naive UTC the columns hold."""
    return (column >= _naive(start)) & (column < _naive(end))


def _naive(dt):
    return clock.ms_to_sql(clock.to_ms(dt))


def counts_by_type(user_id, start, end):
    """{type: notifications} of the user's between start and end."""
    rows = db.session.execute(
        select(StatementEntry.type, func.count()).where(
            StatementEntry.user_id == user_id, _in_period(StatementEntry.created_at, start, end))
        .group_by(StatementEntry.type)).all()
    return dict(rows)


def fired_alerts(user_id, start, end, limit):
    """The first `limit` alert notifications of the period, oldest first: [(when, data)]."""
    rows = db.session.execute(
        select(StatementEntry.created_at, StatementEntry.data).where(
            StatementEntry.user_id == user_id, StatementEntry.type.in_(ALERT_TYPES),
            _in_period(StatementEntry.created_at, start, end))
        .order_by(StatementEntry.created_at, StatementEntry.id).limit(limit)).all()
    return [(clock.to_ms(when), data or {}) for when, data in rows]


def deliveries(user_id, start, end):
    """{channel: {status: rows}} of the user's deliveries made in the period."""
    rows = db.session.execute(
        select(DeliveryLog.channel, DeliveryLog.status, func.count()).where(
            DeliveryLog.user_id == user_id, _in_period(DeliveryLog.created_at, start, end))
        .group_by(DeliveryLog.channel, DeliveryLog.status)).all()
    found = {}
    for channel, status, count in rows:
        found.setdefault(channel, {})[status] = count
    return found


def destination_names(user_id):
    """{"dest:<id>": name} of the user's destinations (read here: the destinations service
    leads back to the delivery job, which renders statements)."""
    rows = db.session.execute(select(Destination.id, Destination.name).where(
        Destination.user_id == user_id)).all()
    return {f"dest:{dest_id}": name for dest_id, name in rows}
