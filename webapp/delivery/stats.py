"""Delivery figures for /health and the deliveries page."""

from datetime import timedelta

from sqlalchemy import func, select

from webapp import clock
from webapp.delivery.channels import CHANNELS
from webapp.delivery.channels.destination import PREFIX as DESTINATION
from webapp.delivery.dispatch import breaker
from webapp.extensions import db
from webapp.models import DeliveryLog, DeliveryStatus

DEFAULT_WINDOW = timedelta(hours=24)


def counts(since, user_id=None):
    """{channel: {status: n}} for rows touched since `since`."""
    query = (select(DeliveryLog.channel, DeliveryLog.status, func.count())
             .where(DeliveryLog.updated_at >= since)
             .group_by(DeliveryLog.channel, DeliveryLog.status))
    if user_id is not None:
        query = query.where(DeliveryLog.user_id == user_id)
    table = {channel: {} for channel in CHANNELS}
    for channel, status, n in db.session.execute(query):
        if user_id is None and channel.startswith(DESTINATION):
            channel = "destinations"  # /health is public: all users' destinations as one
        by_status = table.setdefault(channel, {})
        by_status[status] = by_status.get(status, 0) + n
    return table


def delivery_stats(window=DEFAULT_WINDOW, user_id=None, redis=None):
    """Per channel over the window: counts by status, success and failure rates, breaker state
    (read with `redis`, the health check's own client there)."""
    stats = {}
    for channel, by_status in counts(clock.utcnow() - window, user_id).items():
        ok = by_status.get(DeliveryStatus.SENT, 0) + by_status.get(DeliveryStatus.OUTBOX, 0)
        failed = by_status.get(DeliveryStatus.FAILED, 0)
        done = ok + failed
        stats[channel] = {
            "counts": by_status,
            "success_rate": round(ok / done, 4) if done else None,
            "failure_rate": round(failed / done, 4) if done else None,
            "circuit": breaker(channel, redis).state()["state"]
            if channel in CHANNELS or channel.startswith(DESTINATION) else None,
        }
    return stats
