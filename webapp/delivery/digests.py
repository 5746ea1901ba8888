"""Daily summary and weekly performance emails, sent at each user's local morning, once a period.

What they say: webapp/delivery/digest_email.py. The monthly statement (statements.py) claims
its periods with the same helpers.
"""

from datetime import UTC, datetime, time, timedelta

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from webapp.core.queues import enqueue
from webapp.delivery import digest_email, dispatch
from webapp.extensions import db
from webapp.models import DeliveryLog, DeliveryStatus, DigestRun, User
from webapp.preferences import service as preferences

KINDS = {"daily": "email_daily_summary", "weekly": "email_weekly_performance"}


# Quiet hours ending later than this leave the day's digest too few runs before midnight
LATEST_QUIET_END = time(23, 15)


def due_period(pref, kind, now):
    """The period start date to send now, if the user's local send time has passed; else None."""
    local = now.astimezone(preferences.zone(pref))
    today = local.date()
    first_day = today if kind == "daily" else today - timedelta(days=today.weekday())
    if local < datetime.combine(first_day, time(current_app.config["DIGEST_HOUR"]), local.tzinfo):
        return None
    return first_day - timedelta(days=1 if kind == "daily" else 7)


def preview(user, kind, now=None):
    """The next digest of this kind as it stands now: (subject, text, html)."""
    pref = preferences.preferences_for(user.id)
    local_today = (now or datetime.now(UTC)).astimezone(preferences.zone(pref)).date()
    start_day = local_today if kind == "daily" else local_today - timedelta(
        days=local_today.weekday())
    return digest_email.render(digest_email.build(user, pref, kind, start_day))


def send_due(now=None):
    """Periodic job: claim each due (user, kind, period) once and queue its email; a user in
    quiet hours gets it from the first run after they end."""
    now = now or datetime.now(UTC)
    queued = []
    for user in db.session.scalars(select(User).order_by(User.id)).all():
        pref = preferences.preferences_for(user.id)
        if quiet_today(pref, now):  # a later run, once they end
            continue
        for kind, toggle in KINDS.items():
            start_day = due_period(pref, kind, now) if getattr(pref, toggle) else None
            log_id = _claim(user, pref, kind, start_day) if start_day else None
            if log_id:
                queued.append(queue(log_id))
    return queued


def quiet_today(pref, now):
    """Whether the user's quiet hours hold at `now` and end early enough that a later run
    still finds the day's digest due (until local midnight; the job runs every 15 minutes):
    else it goes now."""
    until = preferences.quiet_until(pref, now)
    if until is None:
        return False
    zone = preferences.zone(pref)
    end = until.astimezone(zone)
    return end.date() == now.astimezone(zone).date() and end.time() <= LATEST_QUIET_END


def _claim(user, pref, kind, start_day):
    if claimed(user.id, kind, start_day):
        return None
    digest = digest_email.build(user, pref, kind, start_day)
    return claim(user.id, kind, start_day, digest_email.digest_id(kind, start_day),
                 empty=not (digest["total"] or digest["watched"]))


def claimed(user_id, kind, start_day):
    """Whether this period's email (of any kind, the monthly statement too) was claimed."""
    return db.session.scalar(select(DigestRun.id).where(
        DigestRun.user_id == user_id, DigestRun.kind == kind,
        DigestRun.period_start == datetime.combine(start_day, time()))) is not None


def claim(user_id, kind, start_day, notification_id, empty):
    """One DigestRun row per period (unique), with its delivery row, in one transaction.

    Returns the delivery row's id to send; None if another run claimed the period first or
    there is nothing to say (the row is then recorded as skipped).
    """
    try:
        db.session.add(DigestRun(user_id=user_id, kind=kind,
                                 period_start=datetime.combine(start_day, time())))
        row = DeliveryLog(
            notification_id=notification_id, user_id=user_id,
            channel="email", status=DeliveryStatus.SKIPPED if empty else DeliveryStatus.QUEUED,
            error="nothing happened in this period" if empty else "")
        db.session.add(row)
        db.session.commit()
    except IntegrityError:  # another scheduler run claimed it first
        db.session.rollback()
        return None
    return None if empty else row.id


def queue(log_id):
    """Queue the send job of a claimed period's delivery row; returns the row's id."""
    enqueue(dispatch.send, log_id, queue="low", job_id=f"delivery-{log_id}")
    return log_id
