"""What every channel's message draws on: the notification as the templates see it."""

from flask import current_app

from webapp import clock
from webapp.notify import types as notification_types


def describe(notification):
    """Template context shared by the channels."""
    kind = notification_types.get(notification["type"])
    created = clock.ms_to_datetime(notification["created_at"])
    return {"n": notification, "label": kind.label if kind else notification["type"],
            "critical": notification_types.is_critical(notification),
            "created": created.strftime("%Y-%m-%d %H:%M UTC"),
            "base_url": current_app.config["PUBLIC_URL"]}


def one_line(text):
    return " ".join(str(text).split())
