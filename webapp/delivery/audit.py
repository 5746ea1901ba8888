"""The audit trail: critical notifications kept in SQL until they expire, never before."""

from datetime import UTC, datetime

from sqlalchemy import delete, select

from webapp.exceptions import InvalidInput
from webapp.extensions import db
from webapp.models import CriticalNotification, utcnow

DEFAULT_PAGE = 50
MAX_PAGE = 200
MAX_BEFORE_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last datetime can hold


def _ms(value):
    return int(value.replace(tzinfo=UTC).timestamp() * 1000)


def as_dict(row):
    return {"id": row.id, "type": row.type, "priority": row.priority, "title": row.title,
            "message": row.message, "data": row.data or {}, "created_at": _ms(row.created_at),
            "expires_at": _ms(row.expires_at)}


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
    """The user's critical notifications, newest first; (rows, cursor for the next page)."""
    limit = max(1, min(int(limit), MAX_PAGE))
    query = select(CriticalNotification).where(CriticalNotification.user_id == user_id)
    if before_ms is not None:
        before_ms = min(max(int(before_ms), 0), MAX_BEFORE_MS)  # fromtimestamp overflows past it
        before = datetime.fromtimestamp(before_ms / 1000, UTC).replace(tzinfo=None)
        query = query.where(CriticalNotification.created_at < before)
    rows = db.session.scalars(query.order_by(CriticalNotification.created_at.desc(),
                                             CriticalNotification.id.desc())
                              .limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (_ms(rows[-1].created_at) if more else None)


def cleanup(now=None):
    """Delete audit rows whose expiry has passed; return how many."""
    removed = db.session.execute(delete(CriticalNotification).where(
        CriticalNotification.expires_at < (now or utcnow()))).rowcount
    db.session.commit()
    return removed
