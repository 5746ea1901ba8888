"""The signed acknowledgement link, and the notification as a channel sends it when it insists.

The link carries the notification, its user and the channel it went out on, signed with the
app's secret under a salt of its own; it needs no login. Opening it only shows a page: mail
scanners follow links, so acknowledging takes the page's POST.
"""

from flask import current_app
from itsdangerous import BadData, URLSafeSerializer
from sqlalchemy import select

from webapp.exceptions import DeliveryRejected
from webapp.extensions import db
from webapp.insist.rules import insisting_types
from webapp.models import Escalation
from webapp.preferences import service as preferences

SALT = "tickerbell.insist.ack"
CHANNEL_NAMES = {"email": "email", "sms": "SMS", "push": "push notification"}


def _serializer():
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=SALT)


def channel_name(channel):
    """How the acknowledgement names the channel the link came in."""
    return CHANNEL_NAMES.get(channel, "webhook" if channel.startswith("dest:") else channel)


def token(nid, user_id, channel):
    return _serializer().dumps([str(nid), int(user_id), channel_name(channel)])


def url(nid, user_id, channel):
    return f"{current_app.config['PUBLIC_URL']}/ack/{token(nid, user_id, channel)}"


def read(text):
    """(nid, user id, channel name) from a token; None if it is bad or tampered with."""
    try:
        nid, user_id, channel = _serializer().loads(text)
    except (BadData, TypeError, ValueError):
        return None
    if not (isinstance(nid, str) and isinstance(user_id, int) and isinstance(channel, str)):
        return None
    return nid, user_id, channel


def overtaken(row):
    """Why a reminder row must not be retried: a later round went meanwhile (it reaches its
    channels and more, and "Reminder 1" after "Reminder 2" would say less, late); or None."""
    if not row.round:
        return None
    rounds = db.session.scalar(select(Escalation.rounds).where(
        Escalation.notification_id == row.notification_id))
    return None if rounds is None or rounds <= row.round else \
        f"reminder {rounds} went out before this one could"


def decorate(notification, row):
    """What a delivery row sends: with its ack link if it insists, "Reminder k of M: " on a
    repeat; DeliveryRejected for a repeat acknowledged before it went out."""
    if row.round:
        esc = db.session.get(Escalation, row.notification_id)
        if esc is None:
            return notification
        if esc.acked_at is not None:
            raise DeliveryRejected(f"acknowledged by {esc.acked_by} before this reminder went out")
        title = f"Reminder {row.round} of {esc.max_rounds}: {notification['title']}"
        return {**notification, "title": title,
                "ack_url": url(row.notification_id, row.user_id, row.channel)}
    types = insisting_types(preferences.preferences_for(row.user_id))
    if notification.get("type") not in types:
        return notification
    return {**notification, "ack_url": url(row.notification_id, row.user_id, row.channel)}
