"""Delivery jobs: claim a log row, send it through its channel behind a breaker, log the outcome.

Retries are driven by the log row, not by RQ: a failed attempt sets `next_attempt_at` with
exponential backoff and the periodic sweep queues it again when due. That keeps retries
durable in SQL and needs no RQ scheduler inside the worker.
"""

import logging
import time
from datetime import timedelta

from flask import current_app
from sqlalchemy import or_, select, update
from sqlalchemy.exc import OperationalError

from webapp import clock, keys
from webapp.alerts import messages
from webapp.core import database, logs, metrics, processes
from webapp.core.breaker import Breaker
from webapp.core.queues import enqueue
from webapp.delivery import audit, channels, digest_email, outbox, statement_email
from webapp.errors import REDIS_FAULTS
from webapp.exceptions import DeliveryRejected, RefusedForNow
from webapp.extensions import db, get_redis
from webapp.insist import links as insist_links
from webapp.models import DeliveryLog, DeliveryStatus, User
from webapp.notify import types as notification_types
from webapp.preferences import service as preferences

log = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_BACKOFF = 15  # seconds before the 2nd attempt; doubles after each failure
DEFAULT_MAX_BACKOFF = 3600
# A provider's "not now" (an SMTP 4xx) is asked again no sooner than this many base backoffs
# (5 minutes by default): a greylisting server refuses for 5 minutes or so.
REFUSED_FOR_NOW_BACKOFFS = 20
SQL_CHUNK = 500  # ids per IN (...) query
STALE_SENDING = timedelta(minutes=10)  # a worker died mid-send: try again
# sooner when the process that claimed it is known to have stopped beating (killed): by then
# a live one would have finished or failed its send (DELIVERY_TIMEOUT) and written so
DEAD_SENDER = timedelta(seconds=30)
# A message the provider took is written "sent" patiently: left "sending", the sweep would
# send it again. Each wait comes after a commit that already waited SQLite's busy timeout.
FINISH_WAITS_S = (0.5, 1.0, 2.0, 4.0, 8.0)
# A send job that fails as a whole (its row not claimed: the database locked) is run again by
# RQ after 1, 4 and 16 s, not left for the sweep's 5 minutes; a claimed row is never sent twice.
SEND_RETRIES = 3
LOST_QUEUED = timedelta(minutes=5)  # queued but its job never ran (Redis lost it)


def breaker(channel, redis=None):
    config = current_app.config
    return Breaker(f"delivery-{channel}",
                   threshold=config.get("DELIVERY_BREAKER_THRESHOLD", 5),
                   reset_timeout=config.get("DELIVERY_BREAKER_RESET", 30.0), redis=redis)


def insert_ignore(rows):
    """Insert log rows, skipping any that exist: the unique key makes planning idempotent."""
    database.insert_ignore(DeliveryLog, rows)


def record_planned(planned):
    """Write [(notification, plan)] as log rows (once per id and channel) in one insert, then
    queue the rows due now; returns their ids."""
    insert_ignore([{"notification_id": str(n["id"]), "user_id": int(n["user_id"]),
                    "channel": channel, "status": status, "next_attempt_at": due, "error": "",
                    "provider_id": "", "attempts": 0}
                   for n, plan in planned for channel, (status, due) in plan.items()])
    owners = {str(n["id"]): n for n, plan in planned if plan}
    nids, due_now = list(owners), []
    for start in range(0, len(nids), SQL_CHUNK):
        due_now += db.session.execute(select(DeliveryLog.id, DeliveryLog.notification_id).where(
            DeliveryLog.notification_id.in_(nids[start:start + SQL_CHUNK]),
            DeliveryLog.status == DeliveryStatus.QUEUED).order_by(DeliveryLog.id)).all()
    for log_id, nid in due_now:
        queue = "high" if notification_types.is_critical(owners[nid]) else "default"
        enqueue(send, log_id, queue=queue, job_id=f"delivery-{log_id}", retries=SEND_RETRIES)
    return [log_id for log_id, _ in due_now]


def _claim(log_id, now):
    """Take the row for this attempt; None if another job has it or it is not due."""
    result = db.session.execute(
        update(DeliveryLog)
        .where(DeliveryLog.id == log_id, or_(
            DeliveryLog.status == DeliveryStatus.QUEUED,
            (DeliveryLog.status == DeliveryStatus.RETRYING) & (DeliveryLog.next_attempt_at <= now)))
        .values(status=DeliveryStatus.SENDING, updated_at=now))
    db.session.commit()
    if result.rowcount != 1:
        return None
    _note_sender(log_id)
    return db.session.get(DeliveryLog, log_id)


def _note_sender(log_id):
    """Say which process sends it: if that one dies, the sweep need not wait STALE_SENDING.
    Best effort: unsaid (no heartbeat here, Redis away), the row waits as before, and an
    earlier try's sender is forgotten, not judged for this one."""
    try:
        if processes.beating is None:
            get_redis().delete(keys.sending(log_id))
        else:
            get_redis().set(keys.sending(log_id), processes.beating, ex=3600)
    except REDIS_FAULTS:
        pass


def _finish(row, status, error="", provider_id=""):
    outcome = {"status": status, "error": error[:2000], "next_attempt_at": None,
               "provider_id": (provider_id or "")[:200], "attempts": row.attempts}
    for wait_s in (*FINISH_WAITS_S, None):
        for name, value in outcome.items():
            setattr(row, name, value)
        try:
            db.session.commit()
            break
        except OperationalError:  # the database locked (or gone) a moment
            db.session.rollback()
            if wait_s is None:
                raise
            logs.event(log, "delivery_finish_waits", logging.WARNING, delivery_id=row.id,
                       status=str(status), in_s=wait_s)
            time.sleep(wait_s)
    failed = status == DeliveryStatus.FAILED  # for good: why, where the request id leads
    logs.event(log, "delivery_finished", logging.WARNING if failed else logging.INFO,
               delivery_id=row.id, channel=row.channel, status=str(status),
               notification_id=row.notification_id, user_id=row.user_id,
               attempts=row.attempts, **({"error": error[:500]} if failed else {}))
    return status


# an outcome, not a status: the breaker held the delivery back unattempted (its row retrying)
DEFERRED = "deferred"


def _retry_later(row, error, delay):
    row.status, row.error = DeliveryStatus.RETRYING, error[:2000]
    row.next_attempt_at = clock.utcnow() + timedelta(seconds=delay)
    db.session.commit()
    return DeliveryStatus.RETRYING


def backoff(attempts):
    base = current_app.config.get("DELIVERY_BACKOFF", DEFAULT_BACKOFF)
    return min(base * 2 ** max(attempts - 1, 0), DEFAULT_MAX_BACKOFF)


def send(log_id):
    """RQ job: one attempt at one delivery. Returns the row's new status."""
    row = _claim(log_id, clock.utcnow())
    if row is None:
        return None
    # a reminder's round (webapp/insist) is timed from when it was queued, not the notification
    since_ms = clock.to_ms(row.created_at) if row.round else None
    outcome = metrics.delivered(row.channel, row.notification_id, _send(row), since_ms)
    return DeliveryStatus.RETRYING if outcome == DEFERRED else outcome


def _send(row):
    channel = channels.lookup(row.channel)
    try:
        message = build(row)
    except DeliveryRejected as exc:
        return _finish(row, DeliveryStatus.FAILED, str(exc))
    except Exception as exc:  # noqa: BLE001 - e.g. Redis away: try again later, counted
        # a read that met a lock left the transaction aborted (PostgreSQL): the retry's
        # commit must not fail on it, leaving the row "sending" for the sweep
        db.session.rollback()
        row.attempts += 1
        return _failed_attempt(row, exc)
    if not channel.configured(current_app.config):
        body, extension = channel.outbox_file(message)
        return _finish(row, DeliveryStatus.OUTBOX, "provider not configured",
                       outbox.write(row.id, row.channel, body, extension))
    return _attempt(row, channel, message)


def build(row):
    """The channel's message for a log row, rendered now; DeliveryRejected if it cannot exist."""
    user = db.session.get(User, row.user_id)
    pref = preferences.preferences_for(row.user_id)
    if statement_email.is_statement(row.notification_id):
        return statement_email.message(user, pref, row.notification_id)
    if digest_email.is_digest(row.notification_id):
        return digest_email.message(user, pref, row.notification_id)
    notification = audit.load(row.notification_id, row.user_id)
    if notification is None:
        raise DeliveryRejected("the notification was deleted before it could be sent")
    notification = messages.personalise(notification)  # the alert's own text, if it has one
    notification = insist_links.decorate(notification, row)  # ack link, "Reminder k of M"
    return channels.lookup(row.channel).build(user, pref, notification)


def _failed_attempt(row, exc, at_least_s=0):
    """Retry with backoff (at least `at_least_s`), or give up (logged) after the last
    attempt."""
    error = f"{type(exc).__name__}: {exc}"
    logs.event(log, "delivery_attempt_failed", logging.WARNING, delivery_id=row.id,
               channel=row.channel, notification_id=row.notification_id, attempt=row.attempts,
               error=error[:500])
    if row.attempts >= current_app.config.get("DELIVERY_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS):
        return _finish(row, DeliveryStatus.FAILED, error)
    late = insist_links.overtaken(row)
    if late:  # the waiting ones were skipped as the round went; this one was being sent
        return _finish(row, DeliveryStatus.SKIPPED, late)
    return _retry_later(row, error, max(backoff(row.attempts), at_least_s))


def _attempt(row, channel, message):
    gate = breaker(row.channel)
    if not gate.allow():  # logged, so a request id followed to its deliveries ends here
        wait_s = gate.retry_in()
        logs.event(log, "delivery_deferred", delivery_id=row.id, channel=row.channel,
                   notification_id=row.notification_id, reason="breaker_open", in_s=wait_s)
        _retry_later(row, _held_back(row), wait_s)
        return DEFERRED
    row.attempts += 1
    # The outcome is written before the breaker hears of it: a Redis lost in between must
    # not leave a sent message "sending", for the sweep to send again.
    try:
        provider_id = channel.send(current_app.config, message)
    except DeliveryRejected as exc:  # the provider answered: up, the message is the problem
        return _told(gate, _finish(row, DeliveryStatus.FAILED, str(exc)))
    except RefusedForNow as exc:  # the provider answered: up, and asks to be tried later
        base = current_app.config.get("DELIVERY_BACKOFF", DEFAULT_BACKOFF)
        wait_s = REFUSED_FOR_NOW_BACKOFFS * base if exc.retry_after_s is None \
            else exc.retry_after_s
        return _told(gate, _failed_attempt(row, exc, min(wait_s, DEFAULT_MAX_BACKOFF)))
    except Exception as exc:  # noqa: BLE001 - any provider error is retried, then logged
        return _told(gate, _failed_attempt(row, exc), exc)
    return _told(gate, _finish(row, DeliveryStatus.SENT, provider_id=provider_id))


def _held_back(row):
    """The row's error while the breaker holds it back: the provider's last answer kept (the
    Deliveries page shows why it failed, not only that it now waits)."""
    note = f"{row.channel} provider circuit open"
    last = row.error.partition("; last error: ")[2] if row.error.startswith(note) else row.error
    return f"{note}; last error: {last}" if last else note


def _told(gate, outcome, error=None):
    """Tell the channel's breaker how its provider answered (`error`: it failed); returns
    `outcome`. Without Redis it hears nothing this time: the delivery is recorded already."""
    try:
        if error is None:
            gate.success()
        else:
            gate.failure(error)
    except REDIS_FAULTS as exc:
        logs.event(log, "breaker_not_told", logging.WARNING, breaker=gate.name,
                   error=logs.error_text(exc, 200))
    return outcome
