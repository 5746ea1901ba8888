"""Daily summary and weekly performance emails, sent at each user's local morning, once a period."""

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta

from flask import current_app, render_template
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from webapp.core.queues import enqueue
from webapp.delivery.channels import email
from webapp.extensions import db
from webapp.inbox import service as inbox
from webapp.market import price_history
from webapp.models import Alert, DeliveryLog, DigestRun, User
from webapp.notify import types as notification_types
from webapp.preferences import service as preferences

KINDS = {"daily": "email_daily_summary", "weekly": "email_weekly_performance"}
TITLES = {"daily": "Daily summary", "weekly": "Weekly performance"}
ALERT_TYPES = ("PRICE_ALERT", "VOLUME_ALERT")
DEFAULT_MAX_LISTED = 50
MAX_READ = 5000  # notifications read per digest; the inbox keeps 7 days


def period_bounds(pref, kind, start_day):
    """Aware UTC (start, end) of the period beginning at local midnight of start_day."""
    tz = preferences.zone(pref)
    length = timedelta(days=7 if kind == "weekly" else 1)
    start = datetime.combine(start_day, time(), tzinfo=tz)
    end = datetime.combine(start_day + length, time(), tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def due_period(pref, kind, now):
    """The period start date to send now, if the user's local send time has passed; else None."""
    local = now.astimezone(preferences.zone(pref))
    today = local.date()
    first_day = today if kind == "daily" else today - timedelta(days=today.weekday())
    if local < datetime.combine(first_day, time(current_app.config["DIGEST_HOUR"]), local.tzinfo):
        return None
    return first_day - timedelta(days=1 if kind == "daily" else 7)


def digest_id(kind, start_day):
    return f"digest:{kind}:{start_day.isoformat()}"


def _notifications(user_id, start, end):
    return inbox.between(user_id, int(start.timestamp() * 1000), int(end.timestamp() * 1000),
                         MAX_READ)


def _watched(user_id, start, end):
    symbols = db.session.scalars(select(Alert.symbol).where(Alert.user_id == user_id)
                                 .distinct().order_by(Alert.symbol)).all()
    rows = []
    for symbol in symbols:
        moved = price_history.change(symbol, int(start.timestamp() * 1000),
                                     int(end.timestamp() * 1000))
        if moved:
            rows.append({"symbol": symbol, "first": moved[0], "last": moved[1], "pct": moved[2]})
    return rows


def build(user, pref, kind, start_day):
    """Everything the digest says, as plain data for the templates."""
    start, end = period_bounds(pref, kind, start_day)
    items = _notifications(user.id, start, end)
    label = {name: t.label for name, t in notification_types.TYPES.items()}
    held_ids = set(db.session.scalars(select(DeliveryLog.notification_id).where(
        DeliveryLog.user_id == user.id, DeliveryLog.status == "digest")).all())
    return {
        "kind": kind, "title": TITLES[kind], "user": user, "start_day": start_day,
        "end_day": start_day + timedelta(days=6 if kind == "weekly" else 0),
        "tz": pref.timezone, "total": len(items),
        "by_type": Counter(label.get(n.get("type"), n.get("type")) for n in items).most_common(),
        "fired": [n for n in items if n.get("type") in ALERT_TYPES][:DEFAULT_MAX_LISTED],
        "critical": [n for n in items if notification_types.is_critical(n)][:DEFAULT_MAX_LISTED],
        "held": [n for n in items if n["id"] in held_ids][:DEFAULT_MAX_LISTED],
        "watched": _watched(user.id, start, end),
        "base_url": current_app.config["PUBLIC_URL"],
    }


def render(digest):
    """(subject, text, html) for a built digest."""
    period = digest["start_day"].isoformat()
    if digest["end_day"] != digest["start_day"]:
        period += f" to {digest['end_day'].isoformat()}"
    subject = f"Tickerbell {digest['title'].lower()}: {period}"
    return (subject, render_template("email/digest.txt", d=digest, period=period),
            render_template("email/digest.html", d=digest, period=period))


def email_message(user, pref, delivery_id):
    """The email for a digest delivery row (`digest:{kind}:{date}`), rendered at send time."""
    _, kind, day = delivery_id.split(":")
    subject, text, html = render(build(user, pref, kind, date.fromisoformat(day)))
    return email.build(current_app.config, pref.delivery_email or user.email, subject, text,
                       html, headers={"X-Tickerbell-Digest": f"{kind} {day}"})


def preview(user, kind, now=None):
    """The next digest of this kind as it stands now: (subject, text, html)."""
    pref = preferences.preferences_for(user.id)
    local_today = (now or datetime.now(UTC)).astimezone(preferences.zone(pref)).date()
    start_day = local_today if kind == "daily" else local_today - timedelta(
        days=local_today.weekday())
    return render(build(user, pref, kind, start_day))


def send_due(now=None):
    """Periodic job: claim each due (user, kind, period) once and queue its email."""
    from webapp.delivery.dispatch import send

    now = now or datetime.now(UTC)
    queued = []
    for user in db.session.scalars(select(User).order_by(User.id)).all():
        pref = preferences.preferences_for(user.id)
        for kind, toggle in KINDS.items():
            start_day = due_period(pref, kind, now) if getattr(pref, toggle) else None
            log_id = _claim(user, pref, kind, start_day) if start_day else None
            if log_id:
                queued.append(log_id)
                enqueue(send, log_id, queue="low", job_id=f"delivery-{log_id}")
    return queued


def _claim(user, pref, kind, start_day):
    """One DigestRun row per period (unique), with its delivery row, in one transaction."""
    exists = db.session.scalar(select(DigestRun.id).where(
        DigestRun.user_id == user.id, DigestRun.kind == kind,
        DigestRun.period_start == datetime.combine(start_day, time())))
    if exists:
        return None
    digest = build(user, pref, kind, start_day)
    empty = not (digest["total"] or digest["watched"])
    try:
        db.session.add(DigestRun(user_id=user.id, kind=kind,
                                 period_start=datetime.combine(start_day, time())))
        row = DeliveryLog(notification_id=digest_id(kind, start_day), user_id=user.id,
                          channel="email", status="skipped" if empty else "queued",
                          error="nothing happened in this period" if empty else "")
        db.session.add(row)
        db.session.commit()
    except IntegrityError:  # another scheduler run claimed it first
        db.session.rollback()
        return None
    return None if empty else row.id
