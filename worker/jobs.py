"""Periodic housekeeping for the notification hub (declared in worker/schedule.py)."""

import logging
from datetime import timedelta

from sqlalchemy import delete, select

from webapp.delivery import audit
from webapp.extensions import db
from webapp.inbox import service as inbox
from webapp.models import DeliveryLog, DeliveryStatus, DigestRun, StatementEntry, User, utcnow

log = logging.getLogger(__name__)

# A monthly statement, sent up to 3 days into the next month, reads a month of both.
DELIVERY_LOG_DAYS = 35
STATEMENT_ENTRY_DAYS = 35
DIGEST_RUN_DAYS = 60  # longer than any digest period, so none is sent twice
FINAL = (DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.OUTBOX, DeliveryStatus.DIGEST,
         DeliveryStatus.SKIPPED)
CHUNK = 500


def prune_redis(now_ms=None):
    """Drop inbox entries (and their read marks) older than the notification lifetime."""
    user_ids = db.session.scalars(select(User.id).order_by(User.id)).all()
    removed = 0
    for start in range(0, len(user_ids), CHUNK):
        removed += sum(int(n) for n, *_ in inbox.trim_many(user_ids[start:start + CHUNK], now_ms))
    return removed


def prune_sql(now=None):
    """Audit rows past expiry; finished delivery rows, digest runs, statement entries past
    their use."""
    now = now or utcnow()
    expired = audit.cleanup(now)
    deliveries = db.session.execute(delete(DeliveryLog).where(
        DeliveryLog.status.in_(FINAL),
        DeliveryLog.updated_at < now - timedelta(days=DELIVERY_LOG_DAYS))).rowcount
    runs = db.session.execute(delete(DigestRun).where(
        DigestRun.sent_at < now - timedelta(days=DIGEST_RUN_DAYS))).rowcount
    entries = db.session.execute(delete(StatementEntry).where(
        StatementEntry.created_at < now - timedelta(days=STATEMENT_ENTRY_DAYS))).rowcount
    db.session.commit()
    return {"audit": expired, "deliveries": deliveries, "digest_runs": runs,
            "statement_entries": entries}


def cleanup():
    """Periodic job: everything that outlived its keep."""
    counts = {"redis_entries": prune_redis(), **prune_sql()}
    log.info("cleanup: %s", counts)
    return counts
