"""What each delivery says: the message for one log row, rendered when the job runs."""

import json
from datetime import UTC, datetime

from flask import current_app, render_template

from webapp.delivery import digests
from webapp.delivery.channels import email
from webapp.exceptions import DeliveryRejected
from webapp.extensions import db
from webapp.models import User
from webapp.notify import router
from webapp.notify import types as notification_types
from webapp.preferences import service as preferences

SMS_MAX = 320


def build(row):
    """The channel's message for a DeliveryLog row; DeliveryRejected if it cannot exist."""
    user = db.session.get(User, row.user_id)
    pref = preferences.preferences_for(row.user_id)
    if row.notification_id.startswith("digest:"):
        return digests.email_message(user, pref, row.notification_id)
    notification = router.load(row.notification_id, row.user_id)
    if notification is None:
        raise DeliveryRejected("the notification was deleted before it could be sent")
    return BUILDERS[row.channel](user, pref, notification)


def address(user, pref):
    return pref.delivery_email or user.email


def describe(notification):
    """Template context shared by the channels."""
    kind = notification_types.get(notification["type"])
    created = datetime.fromtimestamp(int(notification["created_at"]) / 1000, UTC)
    return {"n": notification, "label": kind.label if kind else notification["type"],
            "critical": notification_types.is_critical(notification),
            "created": created.strftime("%Y-%m-%d %H:%M UTC"),
            "base_url": current_app.config["PUBLIC_URL"]}


def one_line(text):
    return " ".join(str(text).split())


def _email(user, pref, notification):
    context = describe(notification)
    prefix = "[Critical] " if context["critical"] else ""
    subject = one_line(f"{prefix}{context['label']}: {notification['title']}")[:200]
    return email.build(
        current_app.config, address(user, pref), subject,
        render_template("email/notification.txt", **context),
        render_template("email/notification.html", **context),
        headers={"X-Tickerbell-Notification": str(notification["id"]),
                 "X-Tickerbell-Type": notification["type"]})


def _sms(user, pref, notification):
    if not pref.phone:
        raise DeliveryRejected("no phone number in the notification settings")
    label = describe(notification)["label"]
    body = one_line(f"Tickerbell {label}: {notification['title']}. {notification['message']}")
    return {"to": pref.phone, "body": body[:SMS_MAX]}


def _push(user, pref, notification):
    subs = [{"id": s.id, "endpoint": s.endpoint, "p256dh": s.p256dh, "auth": s.auth}
            for s in preferences.push_subscriptions(user.id)]
    if not subs:
        raise DeliveryRejected("no browser of this user is subscribed to push")
    payload = {"id": str(notification["id"]), "type": notification["type"],
               "priority": notification.get("priority", "normal"),
               "title": notification["title"], "body": notification.get("message", ""),
               "url": "/notifications"}
    return {"subscriptions": subs, "payload": json.dumps(payload)}


BUILDERS = {"email": _email, "sms": _sms, "push": _push}
