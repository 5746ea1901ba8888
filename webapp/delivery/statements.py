"""Monthly statements: sent on each opted-in user's local first of the month, once a month.

What they say: statement_email.py. They are claimed like the digests (digests.claim: one
DigestRun row per user and month, unique), so racing or repeated scheduler runs send one.
"""

from datetime import UTC, datetime, time, timedelta

from flask import current_app
from sqlalchemy import select

from webapp.delivery import digests, statement_email
from webapp.extensions import db
from webapp.models import Preference, User
from webapp.preferences import service as preferences

KIND = statement_email.KIND
# Due from DIGEST_HOUR on the 1st for this many days: a scheduler that was down on the 1st
# still sends it, but switching statements on mid-month does not bring last month's.
DEFAULT_CATCH_UP_DAYS = 3


def due_month(pref, now):
    """The first day of the month to send now, if now is the user's local 1st (after the
    send hour) or within the catch-up days after it; else None."""
    local = now.astimezone(preferences.zone(pref))
    first = local.date().replace(day=1)
    send_at = datetime.combine(first, time(current_app.config["DIGEST_HOUR"]), local.tzinfo)
    if not send_at <= local < datetime.combine(first + timedelta(days=DEFAULT_CATCH_UP_DAYS),
                                               time(), local.tzinfo):
        return None
    return (first - timedelta(days=1)).replace(day=1)


def preview(user, now=None):
    """This month's statement as it stands now: (subject, text, html)."""
    pref = preferences.preferences_for(user.id)
    local_today = (now or datetime.now(UTC)).astimezone(preferences.zone(pref)).date()
    return statement_email.render(statement_email.build(user, pref, local_today.replace(day=1)))


def send_due(now=None):
    """Periodic job: claim each opted-in user's due month once and queue its email."""
    now = now or datetime.now(UTC)
    queued = []
    opted_in = db.session.scalars(select(Preference).where(Preference.email_monthly_statements)
                                  .order_by(Preference.user_id)).all()
    for pref in opted_in:
        if digests.quiet_today(pref, now):  # a later run, once they end
            continue
        first_day = due_month(pref, now)
        log_id = _claim(pref, first_day) if first_day else None
        if log_id:
            queued.append(digests.queue(log_id))
    return queued


def _claim(pref, first_day):
    if digests.claimed(pref.user_id, KIND, first_day):
        return None
    statement = statement_email.build(db.session.get(User, pref.user_id), pref, first_day)
    return digests.claim(pref.user_id, KIND, first_day, statement_email.statement_id(first_day),
                         empty=statement_email.is_empty(statement))

