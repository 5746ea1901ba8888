"""The periodic sweep: releases held deliveries and re-queues due retries and lost jobs."""

import logging
from itertools import groupby

from flask import current_app
from sqlalchemy import select, update

from webapp import clock, keys
from webapp.core import logs, metrics, processes
from webapp.core.queues import enqueue, forget_failures, waiting
from webapp.delivery import plan
from webapp.delivery.dispatch import (
    DEAD_SENDER,
    DEFAULT_MAX_ATTEMPTS,
    LOST_QUEUED,
    SEND_RETRIES,
    STALE_SENDING,
    send,
)
from webapp.errors import REDIS_FAULTS
from webapp.extensions import db, get_redis
from webapp.models import DeliveryLog, DeliveryStatus
from webapp.preferences import service as preferences

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 1000  # rows per sweep; the next run takes the rest


def sweep(now=None):
    """Queue every delivery that is due and not queued already; return how many jobs were
    queued. Behind a backlog (a provider's outage over), a row still waiting in its queue
    looks lost after LOST_QUEUED: queued again every sweep, the drill found one job 6 times
    in `default`."""
    now = now or clock.utcnow()
    released = release_held(now)
    stopped = dead_senders(now)
    stale = ((DeliveryLog.status == DeliveryStatus.SENDING)
             & ((DeliveryLog.updated_at < now - STALE_SENDING) | DeliveryLog.id.in_(stopped)))
    given_up = _stopped_on_their_last_attempt(stale)
    db.session.execute(update(DeliveryLog).where(stale).values(
        status=DeliveryStatus.RETRYING, next_attempt_at=now, attempts=DeliveryLog.attempts + 1,
        error="worker stopped mid-send"))
    lost = db.session.scalars(select(DeliveryLog.id).where(
        DeliveryLog.status == DeliveryStatus.QUEUED, DeliveryLog.updated_at < now - LOST_QUEUED)
        .limit(DEFAULT_LIMIT)).all()
    if lost:
        db.session.execute(update(DeliveryLog).where(DeliveryLog.id.in_(lost))
                           .values(updated_at=now))
    due = db.session.scalars(select(DeliveryLog.id).where(
        DeliveryLog.status == DeliveryStatus.RETRYING, DeliveryLog.next_attempt_at <= now)
        .order_by(DeliveryLog.next_attempt_at).limit(DEFAULT_LIMIT)).all()
    db.session.commit()
    for row in given_up:  # said as a send's own failure is, once it is written
        logs.event(log, "delivery_finished", logging.WARNING, delivery_id=row.id,
                   channel=row.channel, status=str(DeliveryStatus.FAILED),
                   notification_id=row.notification_id, user_id=row.user_id,
                   attempts=row.attempts, error=STOPPED_LAST)
        metrics.delivered(row.channel, row.notification_id, DeliveryStatus.FAILED)
    jobs = {f"delivery-{log_id}": log_id for log_id in [*released, *lost, *due]}
    queued = waiting(jobs)
    forget_failures(job_id for job_id in jobs if job_id not in queued)
    for job_id, log_id in jobs.items():
        if job_id not in queued:
            enqueue(send, log_id, job_id=job_id, retries=SEND_RETRIES)
    return len(jobs) - len(queued)


STOPPED_LAST = "worker stopped mid-send, on its last attempt"


def _stopped_on_their_last_attempt(stale):
    """The `stale` rows whose stopped attempt was their last: failed now, uncommitted.

    The attempt the stopped worker began counts (its own count died with it): a message
    that stops every worker it reaches must still run out of attempts."""
    limit = current_app.config.get("DELIVERY_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS)
    # one statement: a sweep running beside this one, or a sender finishing, is not undone
    return db.session.execute(
        update(DeliveryLog).where(stale, DeliveryLog.attempts + 1 >= limit)
        .values(status=DeliveryStatus.FAILED, next_attempt_at=None,
                attempts=DeliveryLog.attempts + 1, error=STOPPED_LAST)
        .returning(DeliveryLog.id, DeliveryLog.channel, DeliveryLog.notification_id,
                   DeliveryLog.user_id, DeliveryLog.attempts)).all()


def dead_senders(now):
    """Rows left `sending` DEAD_SENDER ago by a process that no longer beats (a worker killed
    mid-send), found before STALE_SENDING. Redis away: none, they wait as before."""
    ids = db.session.scalars(select(DeliveryLog.id).where(
        DeliveryLog.status == DeliveryStatus.SENDING,
        DeliveryLog.updated_at < now - DEAD_SENDER).limit(DEFAULT_LIMIT)).all()
    if not ids:
        return []
    try:
        r = get_redis()
        with r.pipeline(transaction=False) as pipe:  # a key each: GETs, so a cluster takes it
            for log_id in ids:
                pipe.get(keys.sending(log_id))
            senders = dict(zip(ids, pipe.execute(), strict=True))
        # silent as long as the row waited: clocks a few seconds apart, or a beat held up
        # by a failover, do not pass for a death
        gone = processes.gone(r, [s for s in senders.values() if s],
                              silent_ms=DEAD_SENDER.total_seconds() * 1000)
    except REDIS_FAULTS:
        return []
    return [log_id for log_id, sender in senders.items() if sender in gone]


def release_held(now):
    """Quiet hours over: queue held deliveries, or leave them for the digest past the limit."""
    rows = db.session.scalars(select(DeliveryLog).where(
        DeliveryLog.status == DeliveryStatus.HELD, DeliveryLog.next_attempt_at <= now)
        .order_by(DeliveryLog.user_id, DeliveryLog.notification_id).limit(DEFAULT_LIMIT)).all()
    released = []
    for (user_id, nid), group in groupby(rows, key=lambda r: (r.user_id, r.notification_id)):
        pref = preferences.preferences_for(user_id)
        over = plan.over_limit(pref, nid, clock.to_ms(now))
        for row in group:
            row.status = DeliveryStatus.DIGEST if over else DeliveryStatus.QUEUED
            row.next_attempt_at, row.updated_at = None, now
            if not over:
                released.append(row.id)
    db.session.commit()
    return released
