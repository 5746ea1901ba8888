"""Alerts: CRUD shared by the page, the API and the CLI (input checks: validation.py).

SQL is the source of truth; every change also updates the Redis index, in an order that
leaves the two agreeing after any failure (see _write).
"""

import json
import logging
from datetime import UTC

import redis
from sqlalchemy import delete, func, inspect, select

from webapp import keys
from webapp.alerts import index as alert_index
from webapp.alerts import readings
from webapp.alerts.validation import buffer_text, kind_fields, validate, validate_changes
from webapp.core import logs, pubsub
from webapp.exceptions import NotFound
from webapp.extensions import db, get_redis
from webapp.market import symbols, tickers
from webapp.models import MAX_ID, Alert, utcnow

log = logging.getLogger(__name__)


def create_alert(user_id, data, text_numbers=False, now=None):
    """Validate and store an alert, then arm it in the index.

    Committed before it is armed: it may fire the moment it is, and the slow path must then
    find it in SQL. Armed first, one that fired before its commit was taken for deleted,
    its fired mark dropped, and the next rebuild armed it again: notified twice. If it
    cannot be armed, it is taken back out of SQL.
    """
    alert = Alert(user_id=user_id, **validate(data, text_numbers, now, user_id))
    db.session.add(alert)
    try:
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    try:
        alert_index.index(alert)
    except Exception:
        _take_back(alert.id)
        raise
    _tell_streams(user_id)
    return alert


def _take_back(alert_id):
    """A new alert that could not be armed: out of the index and SQL again, best effort."""
    try:
        alert_index.unindex(alert_id)  # in case its arming ran and only the answer was lost
    except redis.RedisError:
        pass
    try:
        db.session.execute(delete(Alert).where(Alert.id == alert_id))
        db.session.commit()
    except Exception:  # noqa: BLE001 - the caller's error is the one to answer with
        db.session.rollback()
        log.exception("alert %s is saved but not armed until `flask alerts reindex`", alert_id)


def _tell_streams(user_id):
    """The user's open live streams follow the symbols their alerts now watch."""
    message = json.dumps(tickers.watched_symbols(user_id))
    try:
        pubsub.publish(get_redis(), keys.watch_channel(user_id), message)
    except redis.RedisError:  # the change is saved; the streams catch up when they reconnect
        logs.event(log, "watch_not_published", logging.WARNING, user_id=user_id)


def _write(change, undo=None):
    """Finish the session's SQL change together with `change` to the index, or neither.

    The flush takes the write lock, so a locked or read-only database fails here, before
    Redis is touched; a Redis failure rolls SQL back; a failed commit undoes the index change.
    """
    try:
        db.session.flush()
        change()
    except Exception:
        db.session.rollback()
        raise
    try:
        db.session.commit()
    except Exception:
        db.session.rollback()
        try:
            if undo is not None:
                undo()
        except redis.RedisError:
            log.exception("alert index and SQL disagree until `flask alerts reindex`")
        raise


def _copy(alert):
    """A detached copy of the alert's columns: re-indexable after a rollback forgets it."""
    return Alert(**{attr.key: getattr(alert, attr.key) for attr in inspect(Alert).column_attrs})


def update_alert(user_id, alert_id, changes, text_numbers=False, now=None):
    """Edit an alert (a PATCH): checked as a new one is; nothing is written when refused.

    index() keeps the alert's phase (waiting to re-arm, cooling down) while what it watches
    is unchanged, so an edit never fires one crossing twice.
    """
    alert = get_alert(user_id, alert_id)
    fields = validate_changes(alert, changes, text_numbers, now, user_id)
    before = _copy(alert)
    for name, value in fields.items():
        setattr(alert, name, value)
    _write(lambda: alert_index.index(alert), lambda: alert_index.index(before))
    _tell_streams(user_id)
    return alert


def list_alerts(user_id):
    """A user's alerts, newest first."""
    query = select(Alert).where(Alert.user_id == user_id).order_by(Alert.id.desc())
    return db.session.scalars(query).all()


def count_alerts(user_id):
    return db.session.scalar(select(func.count(Alert.id)).where(Alert.user_id == user_id))


def status(alert, now=None, check=None):
    """active, paused, expired, fired (a one-shot that went off), or unknown_symbol.

    unknown_symbol: `check` (symbols.verdicts) says Binance does not trade the symbol, so
    the alert cannot fire, paused or not.
    """
    if alert.expires_at is not None and alert.expires_at <= (now or utcnow()):
        return "expired"
    if not alert.active and alert.mode == "once" and alert.last_fired_at:
        return "fired"
    if check == symbols.UNLISTED:
        return "unknown_symbol"
    return "active" if alert.active else "paused"


def get_alert(user_id, alert_id):
    """The user's alert, or NotFound (also for someone else's, or an impossible id)."""
    if not 1 <= alert_id <= MAX_ID:
        raise NotFound(f"alert {alert_id}")
    alert = db.session.get(Alert, alert_id)
    if alert is None or alert.user_id != user_id:
        raise NotFound(f"alert {alert_id}")
    return alert


def set_active(user_id, alert_id, active):
    """Pause or resume an alert; resuming arms it afresh."""
    alert = get_alert(user_id, alert_id)
    before = _copy(alert)
    alert.active = active
    # index() drops an alert that is not live. An undo arms it afresh: a recurring alert
    # that was waiting to re-arm may then fire once more for the same crossing.
    _write(lambda: alert_index.index(alert, resume=active), lambda: alert_index.index(before))
    _tell_streams(user_id)
    return alert


def delete_alert(user_id, alert_id):
    """Delete an alert and drop it from the index."""
    alert = get_alert(user_id, alert_id)
    before = _copy(alert)
    db.session.delete(alert)
    _write(lambda: alert_index.unindex(alert_id), lambda: alert_index.index(before))
    _tell_streams(user_id)


def expire_due(now=None):
    """Deactivate alerts past their expiry and drop them from the index; returns how many."""
    now = now or utcnow()
    query = select(Alert).where(Alert.active.is_(True), Alert.expires_at <= now)
    expired = db.session.scalars(query).all()
    for alert in expired:
        alert.active = False
    ids = [alert.id for alert in expired]
    # No undo: an expired alert never fires, indexed or not, and the next run tries again.
    _write(lambda: alert_index.unindex_many(ids))
    return len(expired)


def _iso(dt):
    return None if dt is None else dt.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def to_json(alert, check=None, reading=None):
    """The API's view of an alert: the brief's fields (id, symbol, type, price) and ours.

    `check` is the symbol's verdict (symbols.verdicts) and `reading` the market's
    (readings.readings), both looked up when not given (readings.looked_up: none while
    Redis is away).
    """
    if reading is None:
        shown = readings.looked_up([alert])
        check, reading = shown["checks"].get(alert.symbol), shown["readings"].get(alert.id)
    reading = reading or readings.NOT_READ
    return {
        "id": alert.id, "symbol": alert.symbol, "type": alert.condition, **kind_fields(alert),
        "mode": alert.mode, "buffer": buffer_text(alert), "cooldown_s": alert.cooldown_s,
        "expires_at": _iso(alert.expires_at), "note": alert.note, "message": alert.message,
        "channels": alert.channels, "active": alert.active,
        "status": status(alert, check=check), "symbol_check": check,
        "created_at": _iso(alert.created_at),
        "last_fired_at": _iso(alert.last_fired_at), "last_fired_price": alert.last_fired_price,
        **reading,
    }
