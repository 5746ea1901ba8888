"""The audit trail: critical notifications kept in SQL until they expire, never before.

It is also where a stored notification is read back by id: the audit row outlives the
7-day inbox entry and the user cannot delete it, so a critical one is read from here first.
"""

from datetime import timedelta

from flask import current_app
from sqlalchemy import delete, select

from webapp import clock
from webapp.exceptions import InvalidInput
from webapp.extensions import db
from webapp.inbox import service as inbox
from webapp.models import CriticalNotification
from webapp.notify import types as notification_types

DEFAULT_PAGE = 50
MAX_PAGE = 200
MAX_BEFORE_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last datetime can hold
SQL_CHUNK = 500  # ids per IN (...) query


def record(notifications):
    """Keep the critical ones of these stored notifications: one row per id, however often."""
    for notification in notifications:
        if notification_types.is_critical(notification):
            _record_one(notification)


def _record_one(notification):
    nid = str(notification["id"])
    if db.session.get(CriticalNotification, nid) is not None:
        return
    created = clock.ms_to_sql(notification["created_at"])
    days = current_app.config["AUDIT_RETENTION_DAYS"]
    db.session.add(CriticalNotification(
        id=nid, user_id=int(notification["user_id"]), type=notification["type"],
        priority=notification.get("priority") or "critical", title=notification["title"][:200],
        message=notification.get("message", ""), data=notification.get("data") or {},
        created_at=created, expires_at=created + timedelta(days=days)))
    db.session.commit()


def load(nid, user_id):
    """A notification by id: the audit row if critical, else the inbox entry; None if gone."""
    found = load_many([(nid, user_id)])
    return found[0] if found else None


def load_many(fired):
    """Notifications by (nid, user_id): the audit row if critical, else the inbox entry.

    Those gone from both are left out.
    """
    nids = [str(nid) for nid, _ in fired]
    audited = {}
    for start in range(0, len(nids), SQL_CHUNK):
        rows = db.session.scalars(select(CriticalNotification).where(
            CriticalNotification.id.in_(nids[start:start + SQL_CHUNK])))
        audited.update({row.id: _as_notification(row) for row in rows})
    rest = [(nid, uid) for nid, uid in fired if str(nid) not in audited]
    return [*audited.values(), *inbox.find_many(rest)]


def _as_notification(row):
    return {"id": row.id, "user_id": row.user_id, "type": row.type, "priority": row.priority,
            "title": row.title, "message": row.message, "data": row.data or {},
            "created_at": clock.to_ms(row.created_at)}


def as_dict(row):
    return {"id": row.id, "type": row.type, "priority": row.priority, "title": row.title,
            "message": row.message, "data": row.data or {},
            "created_at": clock.to_ms(row.created_at), "expires_at": clock.to_ms(row.expires_at)}


def parse_before(raw):
    """The `before` cursor (ms since the epoch) from a query string; None if absent."""
    if raw is None or raw == "":
        return None
    text = raw.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 15
            and int(text) <= MAX_BEFORE_MS):
        raise InvalidInput({"before": f"Milliseconds since the epoch, 0 to {MAX_BEFORE_MS}."})
    return int(text)


def page(user_id, limit=DEFAULT_PAGE, before_ms=None):
    """The user's critical notifications, newest first; (rows, cursor for the next page).

    The cursor is a millisecond, so a page holds whole milliseconds: a batch of events shares
    one, and a page ending inside it lost the rest of it. It ends before that millisecond
    instead, or, when the millisecond alone fills the page, holds all of it."""
    limit = max(1, min(int(limit), MAX_PAGE))
    query = select(CriticalNotification).where(CriticalNotification.user_id == user_id)
    if before_ms is not None:
        before_ms = min(max(int(before_ms), 0), MAX_BEFORE_MS)  # fromtimestamp overflows past it
        query = query.where(CriticalNotification.created_at < clock.ms_to_sql(before_ms))
    query = query.order_by(CriticalNotification.created_at.desc(),
                           CriticalNotification.id.desc())
    rows = db.session.scalars(query.limit(limit + 1)).all()
    if len(rows) <= limit:
        return rows, None
    cut = clock.to_ms(rows[limit].created_at)  # the newest millisecond not wholly shown
    shown = [row for row in rows[:limit] if clock.to_ms(row.created_at) > cut]
    if shown:
        return shown, cut + 1
    whole = db.session.scalars(query.where(
        CriticalNotification.created_at >= clock.ms_to_sql(cut))).all()
    return whole, cut


def cleanup(now=None):
    """Delete audit rows whose expiry has passed; return how many."""
    removed = db.session.execute(delete(CriticalNotification).where(
        CriticalNotification.expires_at < (now or clock.utcnow()))).rowcount
    db.session.commit()
    return removed
