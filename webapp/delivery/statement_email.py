"""What a monthly statement says, rendered when its delivery is sent.

When it goes out is webapp/delivery/statements.py; the delivery job reads this side, so it
must not import that module. It counts what outlives the 7-day inbox (ledger.py).
"""

from datetime import UTC, date, datetime, time, timedelta

from flask import current_app, render_template

from webapp.delivery import digest_email, ledger
from webapp.delivery.channels import email
from webapp.notify import types as notification_types
from webapp.preferences import service as preferences

KIND = "monthly"  # its DigestRun kind and its delivery row's `digest:monthly:{first day}`
TITLE = "Monthly statement"
DEFAULT_MAX_LISTED = 100  # fired alerts listed; the count covers them all
CHANNELS = {"email": "Email", "sms": "SMS", "push": "Push"}
# delivery statuses in the order shown, with how a reader says them
OUTCOMES = {"sent": "sent", "failed": "failed", "outbox": "kept in the outbox (no provider)",
            "digest": "listed in a digest instead", "skipped": "skipped (nothing to say)",
            "held": "waiting for quiet hours to end", "retrying": "being retried",
            "queued": "on their way", "sending": "on their way"}


def statement_id(first_day):
    return digest_email.digest_id(KIND, first_day)


def is_statement(notification_id):
    return notification_id.startswith(f"{digest_email.ID_PREFIX}{KIND}:")


def next_month(first_day):
    return (first_day.replace(day=28) + timedelta(days=4)).replace(day=1)


def month_bounds(tz, first_day):
    """Aware UTC (start, end) of the local calendar month: midnight of the 1st to the next 1st.

    Built from local wall times, so a month with a DST change is an hour shorter or longer.
    """
    start = datetime.combine(first_day, time(), tzinfo=tz)
    end = datetime.combine(next_month(first_day), time(), tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def build(user, pref, first_day):
    """Everything the statement says about the month beginning first_day, as plain data."""
    start, end = month_bounds(preferences.zone(pref), first_day)
    counts = ledger.counts_by_type(user.id, start, end)
    fired_total = sum(counts.get(name, 0) for name in ledger.ALERT_TYPES)
    return {
        "title": TITLE, "user": user, "first_day": first_day, "month": first_day.strftime("%B %Y"),
        "end_day": next_month(first_day) - timedelta(days=1), "tz": pref.timezone,
        "total": sum(counts.values()), "by_type": _by_type(counts),
        "fired": _fired(user.id, start, end, preferences.zone(pref)), "fired_total": fired_total,
        "deliveries": _deliveries(user.id, start, end),
        "watched": digest_email.watched(user.id, start, end),
        "base_url": current_app.config["PUBLIC_URL"],
    }


def is_empty(statement):
    return not (statement["total"] or statement["deliveries"] or statement["watched"])


def _by_type(counts):
    label = {name: t.label for name, t in notification_types.TYPES.items()}
    return sorted(((label.get(name, name), count) for name, count in counts.items()),
                  key=lambda pair: (-pair[1], pair[0]))


def _fired(user_id, start, end, tz):
    return [{**data, "when": datetime.fromtimestamp(ms / 1000, tz).strftime("%d %b %H:%M")}
            for ms, data in ledger.fired_alerts(user_id, start, end, DEFAULT_MAX_LISTED)]


def _deliveries(user_id, start, end):
    """[{channel, total, outcomes: [(label, count)]}], email, SMS, push, then destinations."""
    names = ledger.destination_names(user_id)
    found = ledger.deliveries(user_id, start, end)
    order = [c for c in CHANNELS if c in found] + sorted(c for c in found if c not in CHANNELS)
    return [{"channel": CHANNELS.get(c) or names.get(c) or "A destination since removed",
             "total": sum(found[c].values()), "outcomes": _outcomes(found[c])} for c in order]


def _outcomes(by_status):
    shown = {}
    for status, count in by_status.items():
        label = OUTCOMES.get(status, status)
        shown[label] = shown.get(label, 0) + count
    order = list(dict.fromkeys(OUTCOMES.values()))
    return sorted(shown.items(), key=lambda pair: order.index(pair[0])
                  if pair[0] in order else len(order))


def render(statement):
    """(subject, text, html) for a built statement."""
    subject = f"Tickerbell monthly statement: {statement['month']}"
    base_url = statement["base_url"]  # the layout's footer link
    return (subject, render_template("email/statement.txt", d=statement),
            render_template("email/statement.html", d=statement, base_url=base_url))


def message(user, pref, delivery_id):
    """The email for a statement's delivery row (`digest:monthly:{date}`), by the email channel."""
    day = delivery_id.rsplit(":", 1)[1]
    subject, text, html = render(build(user, pref, date.fromisoformat(day)))
    return email.compose(current_app.config, email.address(user, pref), subject, text, html,
                         headers={"X-Tickerbell-Digest": f"{KIND} {day}"})
