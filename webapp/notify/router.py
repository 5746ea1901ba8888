"""The router: stores a notification, then decides its audit trail and external deliveries.

Used by the events API, the app's own security events, broadcasts, the CLI and the matcher's
slow path. The hot part (inbox, live feed) runs in the caller; the slow steps (SQL audit row,
delivery plan) run from an RQ job or the slow-path consumer, idempotent by notification id.
"""

import logging
import time
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import select

from webapp.core.queues import enqueue
from webapp.extensions import db, get_redis
from webapp.models import CriticalNotification, PushSubscription, User
from webapp.notify import types as notification_types
from webapp.preferences import service as preferences

DEFAULT_BATCH = 100  # notifications per slow-step job
DEFAULT_RETRIES = 3  # the slow steps are idempotent, so a failed batch simply runs again
SQL_CHUNK = 500  # ids per IN (...) query
RATE_WINDOW_MS = 60_000
SOURCE_FIELDS = ("alert_id", "strategy_id", "order_id")

log = logging.getLogger(__name__)


def current_ms():
    return int(time.time() * 1000)


def route(notification, now_ms=None):
    """Store one notification in its user's inbox and live feed; queue its slow steps."""
    return route_many([notification], now_ms=now_ms)[0]


def route_many(notifications, now_ms=None):
    """Store all or none (InvalidInput before any write), queue the slow steps in batches.

    Returns [(nid, event_id)] in the order given.
    """
    from webapp.inbox import (
        service as inbox,  # the live-feed module; imported late as it imports the stream side
    )

    created = now_ms or current_ms()
    filled = [with_defaults(n) for n in notifications]
    results = inbox.store_many(filled, now_ms=created)
    stored = [{**n, "id": nid, "created_at": created}
              for n, (nid, _) in zip(filled, results, strict=True)]
    for start in range(0, len(stored), DEFAULT_BATCH):
        chunk = stored[start:start + DEFAULT_BATCH]
        critical = any(notification_types.is_critical(n) for n in chunk)
        enqueue(process_batch, chunk, queue="high" if critical else "default",
                job_id=f"route-{chunk[0]['id']}", retries=DEFAULT_RETRIES)
    return results


def with_defaults(notification):
    """The registry's default priority and empty source references filled in."""
    ntype = notification.get("type")
    kind = notification_types.get(ntype) if isinstance(ntype, str) else None
    filled = {field: notification.get(field) or "" for field in SOURCE_FIELDS}
    filled["priority"] = notification.get("priority") or (kind.default_priority if kind else
                                                           "normal")
    filled["data"] = notification.get("data") or {}
    return {**notification, **filled}


def route_fired(fired):
    """Slow steps for (nid, user_id) pairs already in the inbox (the matcher's); idempotent.

    Returns the ids of the delivery rows queued now.
    """
    return process_many(load_many(fired))


def process_batch(notifications):
    """RQ job: the slow steps for notifications the router stored, each on its own.

    One bad notification must not cost the others their audit rows and deliveries; the job
    still fails at the end, so RQ retries it (the steps are idempotent) and records it.
    """
    results, failed = [], []
    for notification in notifications:
        try:
            results.append(process(notification))
        except Exception:
            db.session.rollback()
            log.exception("event=route_process_failed nid=%s", notification.get("id"))
            failed.append(str(notification.get("id")))
            results.append(None)
    if failed:
        raise RuntimeError(f"slow steps failed for notification(s) {', '.join(failed)}")
    return results


def process(notification):
    """Audit row for critical ones, then the delivery plan; safe to run twice."""
    return process_many([notification])


def process_many(notifications):
    """process() for a batch: each user's settings read once, the delivery rows in one write."""
    from webapp.delivery import dispatch

    settings, planned = {}, []
    for notification in notifications:
        uid = int(notification["user_id"])
        if uid not in settings:
            settings[uid] = delivery_settings(uid)
        if settings[uid] is None:
            continue  # the user is gone
        if notification_types.is_critical(notification):
            record_critical(notification)
        planned.append((notification, plan_deliveries(notification, *settings[uid])))
    return dispatch.record_planned(planned)


def delivery_settings(user_id):
    """(preferences, has a push subscription) of a user; None if there is no such user."""
    if db.session.get(User, user_id) is None:
        return None
    pref = preferences.preferences_for(user_id)
    has_push = db.session.scalar(
        select(PushSubscription.id).where(PushSubscription.user_id == user_id).limit(1))
    return pref, has_push is not None


def created_at(notification):
    return datetime.fromtimestamp(int(notification["created_at"]) / 1000, UTC)


def record_critical(notification):
    """The audit trail: one SQL row per notification id, kept until expires_at."""
    nid = str(notification["id"])
    if db.session.get(CriticalNotification, nid) is not None:
        return
    created = created_at(notification).replace(tzinfo=None)
    days = current_app.config["AUDIT_RETENTION_DAYS"]
    db.session.add(CriticalNotification(
        id=nid, user_id=int(notification["user_id"]), type=notification["type"],
        priority=notification.get("priority") or "critical", title=notification["title"][:200],
        message=notification.get("message", ""), data=notification.get("data") or {},
        created_at=created, expires_at=created + timedelta(days=days)))
    db.session.commit()


def wanted_channels(notification, pref, has_push):
    """Channels the type, priority and the user's toggles ask for, before timing rules."""
    kind = notification_types.get(notification["type"])
    critical = notification_types.is_critical(notification)
    low = notification.get("priority") == "low"
    toggle = kind.realtime_toggle if kind else None
    realtime = critical or (not low and (toggle is None or getattr(pref, toggle)))
    channels = []
    if realtime and has_push:
        channels.append("push")
    if realtime and (critical or pref.email_alerts):
        channels.append("email")
    if kind and kind.sms_toggle and getattr(pref, kind.sms_toggle) and not low:
        channels.append("sms")
    return channels


def plan_deliveries(notification, pref, has_push):
    """{channel: (status, due)}: critical goes now; quiet hours hold; over the limit waits."""
    channels = wanted_channels(notification, pref, has_push)
    if not channels:
        return {}
    when = created_at(notification)
    if notification_types.is_critical(notification):
        return {channel: ("queued", None) for channel in channels}
    until = preferences.quiet_until(pref, when)
    if until is not None:
        return {channel: ("held", until.replace(tzinfo=None)) for channel in channels}
    if over_limit(pref, notification["id"], when):
        return {channel: ("digest", None) for channel in channels}
    return {channel: ("queued", None) for channel in channels}


# Counts only what went out, so a flood that is held back does not block the next minute.
# KEYS: 1 tb:rate:{uid}   ARGV: 1 nid  2 at ms  3 window ms  4 limit
RATE_SCRIPT = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local at, window = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', at - 2 * window)
if redis.call('ZCOUNT', KEYS[1], '(' .. (at - window), at) >= tonumber(ARGV[4]) then
  return 1
end
redis.call('ZADD', KEYS[1], at, ARGV[1])
redis.call('PEXPIRE', KEYS[1], 2 * window)
return 0
"""


def over_limit(pref, nid, when):
    """True if the user already had max_per_minute deliveries in the minute up to `when`."""
    at = int(when.timestamp() * 1000)
    over = get_redis().eval(RATE_SCRIPT, 1, f"tb:rate:{pref.user_id}", str(nid), at,
                            RATE_WINDOW_MS, pref.max_per_minute)
    return bool(over)


def load(nid, user_id):
    """A notification by id: the audit row if critical, else the inbox entry; None if gone."""
    found = load_many([(nid, user_id)])
    return found[0] if found else None


def load_many(fired):
    """Notifications by (nid, user_id): the audit row if critical, else the inbox entry.

    Those gone from both are left out.
    """
    from webapp.inbox import service as inbox

    nids = [str(nid) for nid, _ in fired]
    audited = {}
    for start in range(0, len(nids), SQL_CHUNK):
        rows = db.session.scalars(select(CriticalNotification).where(
            CriticalNotification.id.in_(nids[start:start + SQL_CHUNK])))
        audited.update({row.id: _from_audit(row) for row in rows})
    rest = [(nid, uid) for nid, uid in fired if str(nid) not in audited]
    return [*audited.values(), *inbox.find_many(rest)]


def _from_audit(row):
    return {"id": row.id, "user_id": row.user_id, "type": row.type, "priority": row.priority,
            "title": row.title, "message": row.message, "data": row.data or {},
            "created_at": int(row.created_at.replace(tzinfo=UTC).timestamp() * 1000)}
